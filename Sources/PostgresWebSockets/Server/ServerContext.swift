import Logging
import NIOCore
import Synchronization

/// What every connection handler needs, shared by all of them.
final class ServerContext: Sendable {
    let configuration: Configuration
    let verifier: JWTVerifier
    let hub: ChannelHub
    let listener: Listener
    let notifier: Notifier
    let limiter: ConnectionLimiter
    let staticFiles: StaticFiles?
    let logger: Logger
    let allowedOrigins: Set<String>?
    private let nextSessionID = Atomic<Int>(0)

    init(
        configuration: Configuration, verifier: JWTVerifier, hub: ChannelHub, listener: Listener,
        notifier: Notifier, staticFiles: StaticFiles?, logger: Logger
    ) {
        self.configuration = configuration
        self.verifier = verifier
        self.hub = hub
        self.listener = listener
        self.notifier = notifier
        self.limiter = ConnectionLimiter(limit: configuration.maxConnections)
        self.staticFiles = staticFiles
        self.logger = logger
        self.allowedOrigins = configuration.allowedOrigins.map { Set($0.map { $0.lowercased() }) }
    }

    func makeSessionID() -> Int {
        nextSessionID.wrappingAdd(1, ordering: .relaxed).newValue
    }
}
