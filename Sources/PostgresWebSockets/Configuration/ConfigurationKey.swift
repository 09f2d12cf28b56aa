/// Every setting the server reads, with its config-file key and environment variable.
/// The file keys and variables of postgres-websockets keep their names.
public enum ConfigurationKey: String, CaseIterable, Sendable {
    case databaseURI = "db-uri"
    case jwtSecret = "jwt-secret"
    case secretIsBase64 = "secret-is-base64"
    case jwtAudience = "jwt-audience"
    case jwksURL = "jwks-url"
    case jwksCAFile = "jwks-ca-file"
    case host = "server-host"
    case port = "server-port"
    case rootPath = "server-root"
    case listenChannel = "listen-channel"
    case publishTo = "publish-to"
    case auditChannel = "audit-channel"
    case metaChannel = "meta-channel"
    case poolSize = "pool-size"
    case retries
    case checkListenerInterval = "check-listener-interval"
    case listenerTimeout = "listener-timeout"
    case maxPendingMessages = "max-pending-messages"
    case maxSocketBuffer = "max-socket-buffer"
    case maxLag = "max-lag"
    case maxLagSeconds = "max-lag-seconds"
    case maxMessageSize = "max-message-size"
    case maxConnections = "max-connections"
    case handshakeTimeout = "handshake-timeout"
    case maxHeaderSize = "max-header-size"
    case pingInterval = "ping-interval"
    case pongTimeout = "pong-timeout"
    case allowedOrigins = "allowed-origins"
    case certificateFile = "certificate-file"
    case keyFile = "key-file"
    case logLevel = "log-level"
    case logFormat = "log-format"
    case metricsPort = "metrics-port"
    case metricsHost = "metrics-host"
    case durable
    case presence
    case presenceClaim = "presence-claim"
    case presenceFields = "presence-fields"

    public var environmentVariable: String {
        switch self {
        case .databaseURI: "PGWS_DB_URI"
        case .jwtSecret: "PGWS_JWT_SECRET"
        case .secretIsBase64: "PGWS_JWT_SECRET_BASE64"
        case .jwtAudience: "PGWS_JWT_AUDIENCE"
        case .jwksURL: "PGWS_JWKS_URL"
        case .jwksCAFile: "PGWS_JWKS_CA_FILE"
        case .host: "PGWS_HOST"
        case .port: "PGWS_PORT"
        case .rootPath: "PGWS_ROOT_PATH"
        case .listenChannel: "PGWS_LISTEN_CHANNEL"
        case .publishTo: "PGWS_PUBLISH_TO"
        case .auditChannel: "PGWS_AUDIT_CHANNEL"
        case .metaChannel: "PGWS_META_CHANNEL"
        case .poolSize: "PGWS_POOL_SIZE"
        case .retries: "PGWS_RETRIES"
        case .checkListenerInterval: "PGWS_CHECK_LISTENER_INTERVAL"
        case .listenerTimeout: "PGWS_LISTENER_TIMEOUT"
        case .maxPendingMessages: "PGWS_MAX_PENDING_MESSAGES"
        case .maxSocketBuffer: "PGWS_MAX_SOCKET_BUFFER"
        case .maxLag: "PGWS_MAX_LAG"
        case .maxLagSeconds: "PGWS_MAX_LAG_SECONDS"
        case .maxMessageSize: "PGWS_MAX_MESSAGE_SIZE"
        case .maxConnections: "PGWS_MAX_CONNECTIONS"
        case .handshakeTimeout: "PGWS_HANDSHAKE_TIMEOUT"
        case .maxHeaderSize: "PGWS_MAX_HEADER_SIZE"
        case .pingInterval: "PGWS_PING_INTERVAL"
        case .pongTimeout: "PGWS_PONG_TIMEOUT"
        case .allowedOrigins: "PGWS_ALLOWED_ORIGINS"
        case .certificateFile: "PGWS_CERTIFICATE_FILE"
        case .keyFile: "PGWS_KEY_FILE"
        case .logLevel: "PGWS_LOG_LEVEL"
        case .logFormat: "PGWS_LOG_FORMAT"
        case .metricsPort: "PGWS_METRICS_PORT"
        case .metricsHost: "PGWS_METRICS_HOST"
        case .durable: "PGWS_DURABLE"
        case .presence: "PGWS_PRESENCE"
        case .presenceClaim: "PGWS_PRESENCE_CLAIM"
        case .presenceFields: "PGWS_PRESENCE_FIELDS"
        }
    }

    /// The key a config file line names: its own name, or an older name of it
    /// (`db-pool`, postgres-websockets' old name of `pool-size`).
    init?(fileKey: some StringProtocol) {
        switch fileKey {
        case "db-pool": self = .poolSize
        default: self.init(rawValue: String(fileKey))
        }
    }

    /// Values that are secrets are never echoed in errors or logs (a URL may hold a password).
    var isSecret: Bool { self == .jwtSecret || self == .databaseURI || self == .jwksURL }
}
