/// Why the server closes an open socket: the one place where each cause gets its close code
/// and its reason text (what the client reads in the close frame and the log records).
/// A struct rather than an enum, so that causes can be added without breaking callers.
struct CloseReason: Sendable, Equatable, CustomStringConvertible {
    let code: UInt16
    let text: String

    private init(_ code: UInt16, _ text: String) {
        self.code = code
        self.text = text
    }

    var description: String { "\(code) \(text)" }

    static let normalCode: UInt16 = 1000
    static let goingAwayCode: UInt16 = 1001

    /// SIGTERM/SIGINT.
    static let shuttingDown = CloseReason(goingAwayCode, "server shutting down")
    static func protocolError(_ detail: String) -> CloseReason { CloseReason(1002, detail) }
    static let invalidUTF8 = CloseReason(1007, "message is not valid UTF-8")
    static let readOnly = CloseReason(1008, "socket is read-only: its JWT mode is r")
    static let tooSlow = CloseReason(1008, "client too slow")
    static func rejectedByDatabase(_ detail: String) -> CloseReason {
        CloseReason(1008, "rejected by PostgreSQL: \(detail)")
    }
    static func messageTooBig(limit: Int) -> CloseReason { CloseReason(1009, "message exceeds \(limit) bytes") }
    static let envelopeTooBig = CloseReason(
        1009, "message too large: its envelope exceeds PostgreSQL's \(Envelope.maxPayloadBytes)-byte NOTIFY limit")
    static let databaseUnavailable = CloseReason(1013, "database unavailable")
    static let jwtExpired = CloseReason(3001, "JWT expired")
    /// `pgws.disconnect` or `pgws.revoke` matched the socket's claims. A close frame holds 123
    /// bytes of reason: a longer one is cut at a character boundary.
    static func revoked(_ reason: String) -> CloseReason {
        var text = Substring(reason)
        while text.utf8.count > 123 { text.removeLast() }
        return CloseReason(3003, String(text))
    }
    /// The answer to a peer's close frame: its own code echoed (or 1000), no text.
    static func echo(_ code: UInt16) -> CloseReason { CloseReason(code, "") }

    /// Codes a peer may send in a close frame (RFC 6455 7.4).
    static func isValidFromPeer(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: true
        default: false
        }
    }

    /// Closes that are part of normal operation; the others are logged at info.
    var isRoutine: Bool { code == Self.normalCode || code == Self.goingAwayCode }
}
