import Logging
import ServiceLifecycle
import UnixSignals

/// Certificate rotation, as a `Service`: on every SIGHUP it reads the certificate and key
/// files again and, when they load and match, serves new connections with them. Open
/// sockets keep the pair they were opened with. A bad pair is logged and the current one
/// kept, so a half-written rotation never takes the server down.
final class TLSReloader: Service, Sendable {
    private let store: TLSContextStore
    private let signals: UnixSignalsSequence
    private let logger: Logger

    /// `signals` is trapped by the caller before the front end listens: a SIGHUP sent as
    /// soon as the server says it listens reloads, and never terminates the process.
    init(store: TLSContextStore, signals: UnixSignalsSequence, logger: Logger) {
        self.store = store
        self.signals = signals
        self.logger = logger
    }

    func run() async {
        for await _ in signals.cancelOnGracefulShutdown() {
            reload()
        }
    }

    func reload() {
        var metadata: LogMetadata = [
            .certificateFile: "\(store.settings.certificateFile)", .keyFile: "\(store.settings.keyFile)",
        ]
        do {
            metadata[.certificateSerial] = "\(try store.reload().serial)"
            logger.log(.notice, "TLS certificate reloaded", metadata)
        } catch {
            // The message names the files and what is wrong with them, never their contents.
            metadata[.error] = "\(error.message)"
            logger.log(.error, "TLS certificate reload failed, still serving the previous one", metadata)
        }
    }
}
