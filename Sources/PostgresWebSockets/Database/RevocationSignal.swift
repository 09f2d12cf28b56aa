/// What `pgws.disconnect` and `pgws.revoke` send on `pgws:revoke`, and how the listener takes
/// it: `{"filter": {...}, "reason": "...", "until": <Unix seconds, pgws.revoke only>}`.
struct RevocationSignal: Equatable {
    let filter: JSONValue
    let reason: String
    /// Set by `pgws.revoke`: handshakes that match are refused until then.
    let until: Double?

    init(filter: JSONValue, reason: String, until: Double?) {
        self.filter = filter
        self.reason = reason
        self.until = until
    }

    /// Nil for anything the schema's functions do not send (a NOTIFY by hand on the channel).
    init?(payload: [UInt8]) {
        guard let signal = try? JSONParser.parse(payload), case .object = signal["filter"],
            let filter = signal["filter"], let reason = signal["reason"]?.stringValue
        else { return nil }
        self.filter = filter
        self.reason = reason
        switch signal["until"] {
        case nil: until = nil
        case .number(let text)?:
            guard let seconds = Double(text) else { return nil }
            until = seconds
        default: return nil
        }
    }

    static let channelBytes = Array(DurableSchema.revokeChannel.utf8)

    /// On a new connection, before notifications flow: LISTEN first, then read what is in
    /// force, so that no revocation falls between the two. Without the `pgws` schema there is
    /// nothing to read (`pgws.revoke` needs it), but `pgws:revoke` is LISTENed all the same.
    static func prepare(_ conn: PGConnection) -> Result<[Revocations.Revocation], DatabaseError> {
        guard let quoted = conn.quoteIdentifier(DurableSchema.revokeChannel) else {
            return .failure(.connection(conn.errorMessage))
        }
        return conn.execute("LISTEN \(quoted);")
            .flatMap { _ in conn.execute("SELECT to_regclass('pgws.revocations') IS NOT NULL") }
            .flatMap { rows -> Result<[[String?]], DatabaseError> in
                guard rows.first?.first == "t" else { return .success([]) }
                return conn.execute(
                    "SELECT filter::text, extract(epoch FROM until)::text FROM pgws.revocations WHERE until > now()")
            }
            .map { rows in
                rows.compactMap { row -> Revocations.Revocation? in
                    guard row.count == 2, let filterText = row[0], let untilText = row[1],
                        let filter = try? JSONParser.parse(filterText), let until = Double(untilText)
                    else { return nil }
                    return Revocations.Revocation(filter: filter, until: until)
                }
            }
    }
}
