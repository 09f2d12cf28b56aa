/// The durable channels as the listener's connection sees them: which channels are durable,
/// which of the held ones it follows on their signal channel, and, for each of those, the
/// offset of the last message handed on, so that what it hands on is every message once,
/// in offset order, whatever was missed while it was away.
///
/// PostgreSQL signals a durable channel's messages in commit order, which is offset order
/// (`pgws.publish` holds the channel's row lock to commit). A signal whose offset is not the
/// next one means messages were missed (the connection was lost, or the channel became
/// durable before its signal was LISTENed): they are read from the table, and the signals
/// that arrive meanwhile wait. A signal too large to carry its payload is read the same way.
/// Pure state, owned by the listener thread; the `ListenerLoop` runs the reads it asks for.
struct DurableStreams {
    /// What the listener must do with the outcome of a call.
    enum Output: Equatable {
        /// Hand on a durable message.
        case message(ChannelKey, offset: UInt64, payload: [UInt8])
        /// Hand on that the channel is durable from here on (newest offset `last`), or no longer.
        case durability(ChannelKey, isDurable: Bool, last: UInt64)
        /// Read the channel's messages after `after` up to `through` from the table, and
        /// report them with `read(_:rows:complete:)`.
        case read(ChannelKey, after: UInt64, through: UInt64)
    }

    private struct Stream {
        /// The offset of the last message handed on; nil until the first baseline.
        var last: UInt64?
        /// A read from the table is under way up to this offset.
        var readingThrough: UInt64? = nil
        /// Signals that arrived while the stream waited for its baseline or a read.
        var held: [(offset: UInt64, payload: [UInt8]?)] = []
    }

    /// Every durable channel, loaded when the connection opens, kept current by the control
    /// channel's signals.
    private(set) var durable: Set<ChannelKey> = []
    /// The held durable channels whose signal channel is LISTENed, by signal channel name.
    private var bySignal: [String: ChannelKey] = [:]
    private var streams: [ChannelKey: Stream] = [:]

    init() {}

    /// The channel `name` signals a durable channel's messages on (`pgws.signal_channel`).
    static func signalChannel(of channel: ChannelKey) -> String {
        let digest = Digest.sha256(Array(channel.name.utf8))
        return DurableSchema.signalPrefix + Hex.encode(digest.prefix(16))
    }

    static let controlChannelBytes = Array(DurableSchema.controlChannel.utf8)
    private static let prefixBytes = Array(DurableSchema.signalPrefix.utf8)

    /// Whether PostgreSQL delivered this on one of the schema's own channels (control or a
    /// signal channel): names beginning with `pgws:` are reserved while durable is on.
    static func isInternal(_ channel: UnsafeRawBufferPointer) -> Bool {
        channel.count > prefixBytes.count && channel.prefix(prefixBytes.count).elementsEqual(prefixBytes)
    }

    func isFollowed(_ channel: ChannelKey) -> Bool { streams[channel] != nil }

    var followed: [ChannelKey] { Array(streams.keys) }

    // MARK: - The set of durable channels

    /// The durable channels as a fresh connection read them (after LISTENing on the control
    /// channel, so no change is missed).
    mutating func loaded(_ channels: Set<ChannelKey>) {
        durable = channels
    }

    /// A control signal: `durable <last> <name>` or `ephemeral 0 <name>`. Returns the channel
    /// and whether it is durable now; nil for anything else.
    mutating func controlSignal(_ payload: String) -> (channel: ChannelKey, isDurable: Bool, last: UInt64)? {
        let parts = payload.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let last = UInt64(parts[1]), !parts[2].isEmpty else { return nil }
        let channel = ChannelKey(String(parts[2]))
        switch parts[0] {
        case "durable":
            durable.insert(channel)
            return (channel, true, last)
        case "ephemeral":
            durable.remove(channel)
            return (channel, false, 0)
        default:
            return nil
        }
    }

    // MARK: - Following a channel

    /// The channel's signal channel is now LISTENed; its signals wait for `baseline`.
    mutating func startFollowing(_ channel: ChannelKey) {
        bySignal[Self.signalChannel(of: channel)] = channel
        if streams[channel] == nil { streams[channel] = Stream() }
    }

    /// The newest offset of the channel, read after its signal channel was LISTENed. A new
    /// stream starts there (its sockets subscribed at that offset); a stream that was
    /// followed before the connection was lost reads what it missed up to there.
    mutating func baseline(_ channel: ChannelKey, newest: UInt64) -> [Output] {
        guard var stream = streams[channel] else { return [] }
        var output: [Output] = []
        if let last = stream.last {
            // Followed before: the messages missed while away come from the table.
            if newest > last, stream.readingThrough == nil {
                stream.readingThrough = newest
                output.append(.read(channel, after: last, through: newest))
            }
            streams[channel] = stream
            return output
        }
        stream.last = newest
        streams[channel] = stream
        output.append(.durability(channel, isDurable: true, last: newest))
        return output + release(channel)
    }

    /// A channel made durable while held: its stream starts after `offset`, the newest one
    /// when it became durable. What was published between then and the LISTEN on its signal
    /// channel is read by the `baseline` that follows.
    mutating func resume(_ channel: ChannelKey, after offset: UInt64) -> [Output] {
        guard var stream = streams[channel], stream.last == nil else { return [] }
        stream.last = offset
        streams[channel] = stream
        return [.durability(channel, isDurable: true, last: offset)] + release(channel)
    }

    /// The channel is no longer followed (UNLISTENed, or made ephemeral).
    mutating func stopFollowing(_ channel: ChannelKey) -> [Output] {
        bySignal[Self.signalChannel(of: channel)] = nil
        guard streams.removeValue(forKey: channel) != nil else { return [] }
        return [.durability(channel, isDurable: false, last: 0)]
    }

    /// The connection was lost with its LISTENs. Streams keep their offsets: the channels
    /// still held are LISTENed again, and what was missed is read then. Reads under way are
    /// gone with the connection.
    mutating func connectionLost() {
        for key in Array(streams.keys) {
            streams[key]?.readingThrough = nil
            streams[key]?.held = []
        }
    }

    /// Forgets the streams of channels no longer held (released while the connection was lost).
    mutating func keepOnly(_ held: Set<ChannelKey>) -> [Output] {
        var output: [Output] = []
        for channel in Array(streams.keys) where !held.contains(channel) {
            output += stopFollowing(channel)
        }
        return output
    }

    // MARK: - Signals and reads

    /// The channel a signal channel stands for, if it is followed.
    func channel(ofSignal name: UnsafeRawBufferPointer) -> ChannelKey? {
        bySignal[String(decoding: name, as: UTF8.self)]
    }

    /// A signal of `channel`: `<offset>:<payload>`, or `<offset>` alone for a payload too
    /// large to carry.
    mutating func signal(_ channel: ChannelKey, _ text: UnsafeRawBufferPointer) -> [Output] {
        guard streams[channel] != nil else { return [] }
        let colon = text.firstIndex(of: UInt8(ascii: ":"))
        let digits = UnsafeRawBufferPointer(rebasing: text[..<(colon ?? text.endIndex)])
        guard let offset = Self.parseOffset(digits) else { return [] }
        let payload = colon.map { Array(text[($0 + 1)...]) }
        return signal(channel, offset: offset, payload: payload)
    }

    private mutating func signal(_ channel: ChannelKey, offset: UInt64, payload: [UInt8]?) -> [Output] {
        guard var stream = streams[channel] else { return [] }
        guard let last = stream.last, stream.readingThrough == nil else {
            stream.held.append((offset, payload))
            streams[channel] = stream
            return []
        }
        if offset <= last { return [] }  // read from the table already
        if offset == last + 1, let payload {
            stream.last = offset
            streams[channel] = stream
            return [.message(channel, offset: offset, payload: payload)]
        }
        stream.readingThrough = offset
        stream.held.append((offset, payload))
        streams[channel] = stream
        return [.read(channel, after: last, through: offset)]
    }

    /// Rows read for `channel` (offset order). `complete`: the read returned everything up to
    /// its `through` that the table still holds; otherwise it goes on after the last row.
    mutating func read(_ channel: ChannelKey, rows: [(offset: UInt64, payload: [UInt8])], complete: Bool)
        -> [Output]
    {
        guard var stream = streams[channel], let through = stream.readingThrough, let last = stream.last else {
            return []
        }
        var output: [Output] = []
        var newest = last
        for row in rows where row.offset > newest && row.offset <= through {
            output.append(.message(channel, offset: row.offset, payload: row.payload))
            newest = row.offset
        }
        stream.last = newest
        if !complete, !rows.isEmpty, newest < through {
            streams[channel] = stream
            return output + [.read(channel, after: newest, through: through)]
        }
        // What the table no longer holds (retention, make_ephemeral) is gone: go on after it.
        stream.last = max(newest, through)
        stream.readingThrough = nil
        streams[channel] = stream
        return output + release(channel)
    }

    /// Hands on the signals held while the stream waited, now that it can.
    private mutating func release(_ channel: ChannelKey) -> [Output] {
        guard var stream = streams[channel], !stream.held.isEmpty else { return [] }
        let held = stream.held
        stream.held = []
        streams[channel] = stream
        var output: [Output] = []
        for (index, signal) in held.enumerated() {
            output += self.signal(channel, offset: signal.offset, payload: signal.payload)
            if streams[channel]?.readingThrough != nil {
                // A new read: the rest waits behind it, in order.
                streams[channel]?.held += held[(index + 1)...]
                break
            }
        }
        return output
    }

    private static func parseOffset(_ digits: UnsafeRawBufferPointer) -> UInt64? {
        guard !digits.isEmpty, digits.count <= 19 else { return nil }
        var value: UInt64 = 0
        for byte in digits {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + UInt64(byte - UInt8(ascii: "0"))
        }
        return value
    }
}
