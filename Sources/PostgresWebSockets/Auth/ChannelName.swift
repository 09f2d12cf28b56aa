/// The rules for channel names, checked wherever a name enters the bridge.
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
