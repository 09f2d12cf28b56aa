/// The rules for channel names, checked wherever a name enters the bridge (URL, token,
/// configuration), and the key that compares names the way PostgreSQL does.
public enum ChannelName {
    /// PostgreSQL identifiers hold at most 63 bytes (NAMEDATALEN - 1). Longer names are
    /// truncated by LISTEN but refused by pg_notify, so two long names would silently collide.
    public static let maxBytes = 63

    /// Why `name` cannot be a channel, or nil when it can.
    public static func problem(with name: String) -> String? {
        let count = name.utf8.count
        if count == 0 { return "empty channel name" }
        if count > maxBytes { return "channel name longer than \(maxBytes) bytes" }
        if name.utf8.contains(0) { return "channel name contains a NUL byte" }
        return nil
    }
}

/// A channel name compared and hashed by its UTF-8 bytes, as PostgreSQL compares them.
///
/// Swift's String equality is canonical equivalence: "caf\u{E9}" == "cafe\u{301}". Keyed by
/// String, two distinct PostgreSQL channels would share one LISTEN and one subscriber list,
/// and a socket allowed on one would read the other.
struct ChannelKey: Hashable, Sendable {
    let name: String

    init(_ name: String) {
        self.name = name
    }

    static func == (lhs: ChannelKey, rhs: ChannelKey) -> Bool {
        lhs.name.utf8.elementsEqual(rhs.name.utf8)
    }

    func hash(into hasher: inout Hasher) {
        var name = self.name
        name.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}
