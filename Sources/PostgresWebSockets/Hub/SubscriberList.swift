import NIOCore

/// One channel on one event loop: how many sockets hold it (from their handshake or
/// subscription on, so its LISTEN is kept), and the open ones that read it. An array for
/// fast iteration on every broadcast, plus positions for O(1) removal when a socket leaves.
final class SubscriberList {
    let channel: ChannelKey
    private(set) var records: ContiguousArray<MemberRecord> = []
    private var positions: [ObjectIdentifier: Int] = [:]
    /// Sockets holding the channel: readers plus handshakes and subscriptions waiting for
    /// the LISTEN.
    var holders = 0
    /// The dispatch pass that last wrote to these sockets, so each is flushed once per pass.
    var lastPass = 0
    /// The sequence of the channel's latest notification on this loop.
    var lastSequence: UInt64? = nil
    /// The channel is durable: its `pgws.v1` and SSE readers get its stored messages only.
    var isDurable = false
    /// Set while nobody holds the channel: it stays LISTENed (and resumable) until then.
    var lingering: Scheduled<Void>? = nil
    /// How many of the readers want `pgws.v1` or SSE frames, made only when one does.
    private(set) var encodedReaders = 0

    init(channel: ChannelKey) {
        self.channel = channel
    }

    func append(_ record: MemberRecord) {
        let key = ObjectIdentifier(record)
        guard positions[key] == nil else { return }
        positions[key] = records.count
        records.append(record)
        if record.encoding != .raw { encodedReaders += 1 }
    }

    func remove(_ record: MemberRecord) {
        guard let index = positions.removeValue(forKey: ObjectIdentifier(record)) else { return }
        if record.encoding != .raw { encodedReaders -= 1 }
        let last = records.removeLast()
        if index < records.count {
            records[index] = last
            positions[ObjectIdentifier(last)] = index
        }
    }
}
