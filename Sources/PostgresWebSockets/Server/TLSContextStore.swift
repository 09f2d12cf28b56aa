import NIOCore
import NIOSSL
import Synchronization

/// The TLS context new connections are served with. Loaded from `TLSSettings` at start;
/// `reload()` swaps in a freshly read pair (certificate rotation) while connections opened
/// before keep the context they started with. The child channel initializer reads `current`
/// once per connection.
final class TLSContextStore: Sendable {
    /// What was loaded: the context, and the leaf certificate's serial number (hex) for the logs.
    struct Loaded: Sendable {
        let context: NIOSSLContext
        let serial: String
    }

    let settings: TLSSettings
    private let loaded: Mutex<Loaded>

    /// Reads the pair; a pair that does not load or does not match is a start-up error.
    init(settings: TLSSettings) throws(ConfigurationError) {
        self.settings = settings
        self.loaded = Mutex(try Self.load(settings))
    }

    /// The context for a connection being accepted now.
    var current: NIOSSLContext { loaded.withLock { $0.context } }

    var serial: String { loaded.withLock { $0.serial } }

    /// Reads the files again. On success new connections get the new pair; on failure
    /// nothing changes and the error names the file(s) at fault.
    @discardableResult
    func reload() throws(ConfigurationError) -> Loaded {
        let fresh = try Self.load(settings)
        loaded.withLock { $0 = fresh }
        return fresh
    }

    /// Builds a server context from the PEM files. Errors name the setting and its path,
    /// never what the files hold: the key's bytes go to BoringSSL and nowhere else.
    /// Blocking file I/O: called at start and from the reload task, never on an event loop.
    static func load(_ settings: TLSSettings) throws(ConfigurationError) -> Loaded {
        let certificateName = "\(ConfigurationKey.certificateFile.rawValue) \(settings.certificateFile)"
        let keyName = "\(ConfigurationKey.keyFile.rawValue) \(settings.keyFile)"
        let chain: [NIOSSLCertificate]
        switch readWholeFile(settings.certificateFile) {
        case .failure(let error):
            throw ConfigurationError("\(ConfigurationKey.certificateFile.rawValue): \(error.message)")
        case .success(let bytes):
            chain = (try? NIOSSLCertificate.fromPEMBytes(bytes)) ?? []
        }
        guard let leaf = chain.first else {
            throw ConfigurationError("\(certificateName) holds no PEM certificate")
        }
        let key: NIOSSLPrivateKey
        switch readWholeFile(settings.keyFile) {
        case .failure(let error):
            throw ConfigurationError("\(ConfigurationKey.keyFile.rawValue): \(error.message)")
        case .success(let bytes):
            guard let parsed = try? NIOSSLPrivateKey(bytes: bytes, format: .pem) else {
                throw ConfigurationError(
                    "\(keyName) holds no PEM private key (keys protected by a passphrase are not supported)")
            }
            key = parsed
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        // How long a closed connection waits for the client's close_notify: the WebSocket
        // close handshake is over by then, so a client that never answers costs one second.
        configuration.shutdownTimeout = .seconds(1)
        do {
            let context = try NIOSSLContext(configuration: configuration)
            return Loaded(context: context, serial: hex(leaf.serialNumber))
        } catch NIOSSLError.failedToLoadPrivateKey {
            // BoringSSL refuses a key whose public half is not the leaf certificate's.
            throw ConfigurationError("\(keyName) is not the key of \(certificateName)")
        } catch {
            throw ConfigurationError("cannot use \(certificateName) with \(keyName): \(error)")
        }
    }

    private static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
