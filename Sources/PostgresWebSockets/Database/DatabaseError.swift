import CLibPQ

/// A failure reported by libpq or PostgreSQL, sorted into what the bridge does about it:
/// connection problems are retried, content problems are reported to the message's sender.
struct DatabaseError: Error, CustomStringConvertible {
    enum Kind {
        /// The connection is gone or unusable; the work will be retried on a new one.
        case connection
        /// PostgreSQL refused the statement itself (e.g. payload too long).
        case content
    }

    let kind: Kind
    let message: String
    let sqlState: String?

    var description: String { sqlState.map { "\(message) (SQLSTATE \($0))" } ?? message }

    static func connection(_ message: String) -> DatabaseError {
        DatabaseError(kind: .connection, message: message, sqlState: nil)
    }

    /// SQLSTATE classes that mean "try again elsewhere or later", not "this message is bad":
    /// 08 connection exception, 53 insufficient resources, 57 operator intervention
    /// (shutdown, terminated backend), 58 system error, 40 transaction rollback (serialization),
    /// 25006 read-only transaction (connected to a standby after a failover).
    static func isTransient(sqlState: String) -> Bool {
        let transientClasses: Set<Substring> = ["08", "53", "57", "58", "40"]
        return transientClasses.contains(sqlState.prefix(2)) || sqlState == "25006"
    }
}
