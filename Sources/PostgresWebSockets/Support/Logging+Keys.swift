import Logging

/// Every metadata key the server logs with. One list, so that an operator's queries (and the
/// tests) can rely on the names: a line about a socket always carries `socket_id`, a refusal
/// `http_status`, a close `close_code`, and so on.
public enum LogKey: String, Sendable, CaseIterable {
    /// The id of one WebSocket, on every line about it: follow one client with it.
    case socketID = "socket_id"
    case remoteAddress = "remote_address"
    case channels
    case mode
    case closeCode = "close_code"
    case closeReason = "close_reason"
    case httpStatus = "http_status"
    /// Why a request was refused (never its content: tokens stay out of logs).
    case refusal
    case error
    case bytesReceived = "bytes_received"
    /// What happened to the database connection: `connected`, `unavailable`, `lost`, `restored`.
    case database
    case outageSeconds = "outage_seconds"
    case backendPID = "backend_pid"
    case messages
    /// A meta event's name (`ConnectionOpen`, `ConnectionClose`).
    case event
    case lane
    /// A notification's place in the server's delivery log.
    case sequence
    case listen
    case unlisten
    case host
    case port
    case auditChannel = "audit_channel"
    case metaChannel = "meta_channel"
    case poolSize = "pool_size"
    /// `on` when the server speaks TLS on its port, `off` for plain HTTP.
    case tls
    case certificateFile = "certificate_file"
    case keyFile = "key_file"
    /// The serial number (hex) of the certificate served to new connections.
    case certificateSerial = "certificate_serial"
    /// The JWKS URL without user information or query (`JWKSURL.redacted`).
    case jwksURL = "jwks_url"
    /// How many signing keys a fetched JWK Set gave.
    case keys
    /// Failed fetches in a row.
    case failures
    /// Seconds until the next fetch.
    case nextFetchSeconds = "next_fetch_seconds"
    /// A revocation's claims filter (JSON), as `pgws.disconnect` or `pgws.revoke` gave it.
    case filter
    /// When a revocation ends (Unix seconds).
    case until
}

/// Metadata written with `LogKey`s: `[.closeCode: "1008", .closeReason: "client too slow"]`.
struct LogMetadata: ExpressibleByDictionaryLiteral {
    var representation: Logger.Metadata

    init(dictionaryLiteral elements: (LogKey, Logger.MetadataValue)...) {
        representation = Logger.Metadata(uniqueKeysWithValues: elements.map { ($0.rawValue, $1) })
    }

    subscript(key: LogKey) -> Logger.MetadataValue? {
        get { representation[key.rawValue] }
        set { representation[key.rawValue] = newValue }
    }
}

extension Logger {
    subscript(key: LogKey) -> Logger.MetadataValue? {
        get { self[metadataKey: key.rawValue] }
        set { self[metadataKey: key.rawValue] = newValue }
    }

    /// Logs with `LogKey` metadata: `logger.log(.info, "closing socket", [.closeCode: "1008"])`.
    /// The metadata is built only for a line that is written.
    func log(_ level: Logger.Level, _ message: @autoclosure () -> Message, _ metadata: @autoclosure () -> LogMetadata) {
        guard logLevel <= level else { return }
        log(level: level, message(), metadata: metadata().representation)
    }
}

/// A socket's lines: the server's logger, with the socket's `socket_id` added to each line
/// that is written. (A `Logger` per socket with the id as metadata cost every idle socket its
/// own copy of the handler and a dictionary.)
struct SocketLog {
    let logger: Logger
    let socketID: Int

    func log(
        _ level: Logger.Level, _ message: @autoclosure () -> Logger.Message, _ metadata: @autoclosure () -> LogMetadata
    ) {
        logger.log(level, message(), withSocketID(metadata()))
    }

    private func withSocketID(_ metadata: LogMetadata) -> LogMetadata {
        var metadata = metadata
        metadata[.socketID] = "\(socketID)"
        return metadata
    }
}
