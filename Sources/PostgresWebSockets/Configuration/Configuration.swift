import Logging

/// The server's settings, validated. Built from a config file and the environment by
/// `Configuration.load(file:environment:)`, or directly by tests.
public struct Configuration: Sendable {
    /// libpq connection string or URI.
    public var databaseURI: String
    /// The HMAC key, already base64-decoded when `secret-is-base64` is set.
    public var jwtSecret: [UInt8]
    public var host: String = "127.0.0.1"
    /// 0 asks the kernel for a free port; the chosen port is logged.
    public var port: Int = 3000
    /// Folder served as static files on plain GET requests.
    public var rootPath: String? = nil
    public var auditChannel: String? = nil
    public var metaChannel: String? = nil
    /// libpq connections used to send client messages.
    public var poolSize: Int = 2
    /// Client messages held while the database is unreachable.
    public var maxPendingMessages: Int = 10_000
    /// Unsent bytes a socket may accumulate before it is closed as too slow.
    public var maxSocketBuffer: Int = 1 << 20
    /// Largest text message a client may send, in bytes.
    public var maxMessageSize: Int = Envelope.maxPayloadBytes
    /// Open WebSockets allowed at once; one more gets HTTP 503.
    public var maxConnections: Int = 10_000
    /// Seconds a new TCP connection has to complete its HTTP request.
    public var handshakeTimeout: Double = 10
    /// Bytes allowed for the request line plus headers.
    public var maxHeaderSize: Int = 16 * 1024
    /// Seconds of silence from a client before the server pings it.
    public var pingInterval: Double = 30
    /// Seconds a pinged client has to answer before it is dropped.
    public var pongTimeout: Double = 10
    /// Origins allowed to open sockets; nil allows every origin.
    public var allowedOrigins: [String]? = nil
    public var logLevel: Logger.Level = .info

    public init(databaseURI: String, jwtSecret: [UInt8]) {
        self.databaseURI = databaseURI
        self.jwtSecret = jwtSecret
    }
}

/// A setting that is missing or wrong. Its description is the one line printed at start-up.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
