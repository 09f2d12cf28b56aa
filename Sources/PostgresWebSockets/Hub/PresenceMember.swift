/// Who a socket is on a channel, for presence: the value of its token's `presence-claim`,
/// and what other clients are shown of it, `{"id": <that value>, "claims": {<the claims
/// named in presence-fields>}}`.
struct PresenceMember: Sendable, Equatable {
    /// Longer ids are not members: a member is sent in one NOTIFY, under PostgreSQL's limit.
    static let maxIDBytes = 512
    /// Past this, a member is shown with its id only.
    static let maxMemberBytes = 4096

    /// The id's JSON text.
    let id: String
    /// The member object's JSON text, as clients get it.
    let shown: String

    /// Nil when the claims have no usable `claim` (missing, null, or an id too long).
    init?(claims: JSONValue, claim: String, fields: [String]) {
        guard let value = claims[claim], value != .null else { return nil }
        let id = value.serialized
        guard id.utf8.count <= Self.maxIDBytes else { return nil }
        var shared: [(key: String, value: JSONValue)] = []
        for field in fields {
            if let value = claims[field] { shared.append((field, value)) }
        }
        var shown = JSONValue.object([("id", value), ("claims", .object(shared))]).serialized
        if shown.utf8.count > Self.maxMemberBytes {
            shown = JSONValue.object([("id", value), ("claims", .object([]))]).serialized
        }
        self.id = id
        self.shown = shown
    }
}
