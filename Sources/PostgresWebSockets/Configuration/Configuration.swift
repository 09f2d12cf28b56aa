import Logging
import NIOCore

/// The server's settings, validated, grouped by the part that reads them. Built from a config
/// file and the environment by `Configuration.load(file:environment:)`, or directly by tests.
/// Durations are converted once, here, into the types their users schedule with.
public struct Configuration: Sendable {
    /// libpq connection string or URI, for the listener and every notifier connection.
    public var databaseURI: String
    /// The `jwt-secret` text (a raw HMAC secret, a JWK or a JWK Set), already base64-decoded
    /// when `secret-is-base64` is set. Optional when `jwks` is set; one of the two is required.
    public var jwtSecret: [UInt8]?
    /// When set, a token's `aud` claim must name it.
    public var jwtAudience: String? = nil
    /// Signing keys fetched from a URL, next to or instead of `jwtSecret`.
    public var jwks: JWKSSettings? = nil
    public var server = ServerSettings()
    /// Set when the server speaks TLS (`wss://`, `https://`) instead of plain HTTP.
    public var tls: TLSSettings? = nil
    public var channels = ChannelSettings()
    public var listener = ListenerSettings()
    public var notifier = NotifierSettings()
    public var limits = Limits()
    public var durable = DurableSettings()
    public var presence = PresenceSettings()
    public var logLevel: Logger.Level = .info
    public var logFormat = LogFormat.text
    /// The operators' listener (`/metrics`, `/channels`); off unless a port is set.
    public var metrics = MetricsSettings()
    /// What loading noticed but did not refuse (settings accepted for compatibility), logged
    /// at start.
    public var notices: [String] = []

    public init(databaseURI: String, jwtSecret: [UInt8]?) {
        self.databaseURI = databaseURI
        self.jwtSecret = jwtSecret
    }
}

/// Where `/metrics` and the admin endpoints are served, apart from the public port.
public struct MetricsSettings: Sendable {
    /// Loopback unless set: these endpoints are for the operators' network only.
    public var host = "127.0.0.1"
    /// nil: off. 0 asks the kernel for a free port (tests).
    public var port: Int? = nil
}

/// How log lines are written to standard error.
public enum LogFormat: String, Sendable {
    /// `2026-11-30T13:45:07+0000 info postgres-websockets: socket_id=7 [...] message`.
    case text
    /// One object per line (`JSONLogHandler`).
    case json
}

/// Where signing keys are fetched from (a JWK Set, RFC 7517 5) and how often.
/// The durations below `url` and `caFile` are not configuration keys: the tests shorten them.
public struct JWKSSettings: Sendable {
    /// `http` or `https`; https verifies the server with the system's trust store.
    public var url: String
    /// PEM certificates of a private authority trusted for `url` besides the system's.
    public var caFile: String? = nil
    /// How long a fetched set is used when its response has no usable `Cache-Control: max-age`.
    public var defaultRefresh: Duration = .seconds(600)
    /// Bounds on how long a fetched set is used, whatever `max-age` says.
    public var minimumRefresh: Duration = .seconds(30)
    public var maximumRefresh: Duration = .seconds(86_400)
    /// The least time between the start of one fetch and a fetch for a token whose `kid` no
    /// key has: anyone can send such tokens.
    public var unknownKeyInterval: Duration = .seconds(30)
    /// Wait after the first of a run of failed fetches, doubling up to `retryMaximum`.
    public var retryInitial: Duration = .seconds(1)
    public var retryMaximum: Duration = .seconds(60)
    /// Whole fetch: connect, request, response.
    public var fetchTimeout: Duration = .seconds(10)
    /// A larger response is a failed fetch.
    public var maxResponseBytes: Int = JWTKeySet.maxDocumentBytes

    public init(url: String, caFile: String? = nil) {
        self.url = url
        self.caFile = caFile
    }
}

/// Where the server listens and what it serves besides WebSockets.
public struct ServerSettings: Sendable {
    /// `*4` (every IPv4 address), as postgres-websockets; `*6` every IPv6 address.
    public var host: String = "*4"
    /// 0 asks the kernel for a free port; the chosen port is logged.
    public var port: Int = 3000
    /// Folder served as static files on plain GET requests.
    public var rootPath: String? = nil
    /// Origins allowed to open sockets; nil allows every origin.
    public var allowedOrigins: [String]? = nil
}

/// The certificate and key the server speaks TLS with, on its one port. Both files are PEM;
/// the certificate file holds the server's certificate first, then any intermediates. They are
/// read at start and again on SIGHUP (for new connections; open ones keep theirs).
public struct TLSSettings: Sendable, Equatable {
    public var certificateFile: String
    public var keyFile: String

    public init(certificateFile: String, keyFile: String) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }
}

/// The channels the server itself listens and publishes on.
public struct ChannelSettings: Sendable {
    /// Where client messages and meta events are NOTIFYed.
    public enum PublishTarget: String, Sendable {
        /// `NOTIFY C` for a message to C (this server's own behaviour).
        case channel
        /// `NOTIFY <listen channel>`, routed to C by the envelope's `channel` field, as
        /// postgres-websockets 0.10 and later do.
        case listenChannel = "listen-channel"
    }

    /// Always LISTENed; a JSON payload with a string `channel` goes to that channel's readers.
    public var listenChannel: String = "postgres-websockets-listener"
    public var publishTo = PublishTarget.channel
    /// Receives a copy of every client message.
    public var auditChannel: String? = nil
    /// Receives `ConnectionOpen` and `ConnectionClose` events.
    public var metaChannel: String? = nil

    /// The channel a message meant for `channel` is NOTIFYed on.
    func notifyChannel(for channel: String) -> String {
        publishTo == .listenChannel ? listenChannel : channel
    }
}

/// How the listener connects and watches its connection when PostgreSQL says nothing.
public struct ListenerSettings: Sendable {
    /// Connection attempts at start before the server gives up and exits 1; nil tries forever.
    /// Once connected, the listener reconnects forever whatever this says.
    public var startupAttempts: Int? = nil
    /// Silence after which an idle connection is probed.
    public var probeAfterIdle: Duration = .milliseconds(250)
    /// How long a probe may go unanswered (with nothing at all received) before the
    /// connection counts as lost (`listener-timeout`; longer while answers have been slow).
    public var probeTimeout: Duration = .milliseconds(750)
}

/// Durable channels (the `pgws` schema).
public struct DurableSettings: Sendable {
    public var mode = DurableSchema.Mode.off
    /// How often a server tries to prune messages past their retention (one server at a time).
    public var pruneInterval: Duration = .seconds(30)
    /// Messages a replay reads from the table per round trip, and the bytes it aims at.
    public var replayPageRows = 2000
    public var replayPageBytes = 1 << 20

    /// Whether the server uses the schema at all.
    public var isEnabled: Bool { mode != .off }
}

/// Who is on which channel, kept in `pgws.presence` (`Presence/`).
public struct PresenceSettings: Sendable {
    public var isEnabled = false
    /// The claim that says who a socket is; sockets whose token lacks it are not members.
    public var claim = "sub"
    /// The claims shared with other clients in a member's `claims`.
    public var fields: [String] = []
    /// How long after a change its row is written: changes within it go in one batch.
    public var flushDelay: Duration = .milliseconds(250)
    /// How often a server says it is alive, and after how long without that its rows go.
    public var heartbeat: Duration = .seconds(5)
    public var staleAfter: Duration = .seconds(20)

    /// The schema is used by durable channels and by presence.
    static func schemaMode(durable: DurableSchema.Mode, presence: Bool) -> DurableSchema.Mode {
        durable == .off && presence ? .on : durable
    }
}

/// The connections that send client messages to PostgreSQL.
public struct NotifierSettings: Sendable {
    /// libpq connections used to send client messages.
    public var poolSize: Int = 2
    /// Client messages held while the database is unreachable.
    public var maxPendingMessages: Int = 10_000
}

/// What one client may cost the server, in bytes and time.
public struct Limits: Sendable {
    /// Open WebSockets allowed at once; one more gets HTTP 503.
    public var maxConnections: Int = 10_000
    /// The largest payload of a durable channel's message (`pgws.publish` refuses more).
    public static let maxDurablePayload = 1 << 20
    /// Largest text message a client may send, in bytes. Above NOTIFY's limit only messages
    /// to durable channels can be sent; others are refused with their envelope's size.
    public var maxMessageSize: Int = Envelope.maxPayloadBytes
    /// Bytes written to one socket and not yet taken by its kernel buffer, beyond which the
    /// socket stops getting frames directly and replays them from the delivery log instead.
    public var maxSocketBuffer: Int = 64 << 10
    /// Bytes of recent frames each event loop keeps for sockets that fell behind (and, later,
    /// for resuming). A socket whose position falls out is closed with 1008.
    public var maxLag: Int = 64 << 20
    /// How long frames are kept for sockets that fell behind.
    public var maxLagDuration: TimeAmount = .seconds(30)
    /// Bytes allowed for the request line plus headers.
    public var maxHeaderSize: Int = 16 * 1024
    /// Time a new TCP connection has to complete its HTTP request and get its answer.
    public var handshakeTimeout: TimeAmount = .seconds(10)
    /// Silence from a client before the server pings it.
    public var pingInterval: TimeAmount = .seconds(30)
    /// Time a pinged client has to answer before it is dropped; also how long a closing
    /// socket may take to drain and answer the close frame.
    public var pongTimeout: TimeAmount = .seconds(10)
}

/// A setting that is missing or wrong. Its description is the one line printed at start-up.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension TimeAmount {
    /// Seconds as given in the configuration (fractions allowed).
    public static func fromSeconds(_ seconds: Double) -> TimeAmount {
        .nanoseconds(Int64((seconds * 1e9).rounded()))
    }
}
