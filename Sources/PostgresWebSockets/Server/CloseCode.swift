/// The close codes the server sends, and why.
enum CloseCode {
    /// Shutdown (`server shutting down`) or a client that stopped answering pings.
    static let goingAway: UInt16 = 1001
    static let protocolError: UInt16 = 1002
    /// A binary frame: the bridge carries text only.
    static let unsupportedData: UInt16 = 1003
    static let invalidUTF8: UInt16 = 1007
    /// A write from a read-only socket, a client too slow to read, a message PostgreSQL refused.
    static let policyViolation: UInt16 = 1008
    static let messageTooBig: UInt16 = 1009
    /// The queue for PostgreSQL is full while the database is unreachable.
    static let tryAgainLater: UInt16 = 1013
    /// The token's `exp` passed while the socket was open.
    static let jwtExpired: UInt16 = 3001
    static let normal: UInt16 = 1000

    /// Codes a peer may send in a close frame (RFC 6455 7.4).
    static func isValidFromPeer(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: true
        default: false
        }
    }
}
