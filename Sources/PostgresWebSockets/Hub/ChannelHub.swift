import NIOCore
import Synchronization

/// Routes notifications from the listener thread to the event loops. Each loop has its
/// own shard and inbox; the only lock on the way is the inbox's, taken once per batch by
/// the listener and once per pass by the loop, never while sockets are written.
///
/// Frames handed to the loops and not yet written are bounded (`backlogMarks`): past the
/// high mark the listener stops reading from PostgreSQL, whose notification queue is built
/// to absorb bursts, and it reads again once the loops are down to the low mark.
final class ChannelHub: NotificationSink, PausedWriters, SocketRevoker, PresenceWatchers, Sendable {
    static let backlogMarks = Watermark(low: 2 << 20, high: 4 << 20)

    private let shards: [NIOLoopBoundBox<LoopShard>]
    private let inboxes: [ShardInbox]
    private let backlog = WatermarkedLevel(ChannelHub.backlogMarks)
    private let routing: ListenChannelRouting
    /// With presence on: counts the sockets that watch joins and leaves.
    private let presence: PresenceBook?
    /// One epoch for every loop: an offset means the same whichever loop a client lands on.
    let offsets: OffsetSpace
    /// The sequence of the next notification; only the listener thread advances it.
    private let nextSequence = Atomic<UInt64>(0)

    /// - Parameter window: what each loop's `DeliveryLog` keeps (`max-lag`, `max-lag-seconds`).
    init(
        group: any EventLoopGroup, registry: ListenRegistry, window: (bytes: Int, age: TimeAmount),
        routing: ListenChannelRouting, store: (any DurableReading)? = nil, presence: PresenceBook? = nil
    ) {
        self.routing = routing
        self.presence = presence
        let offsets = OffsetSpace()
        self.offsets = offsets
        shards = group.makeIterator().map { loop in
            NIOLoopBoundBox.makeBoxSendingValue(
                LoopShard(
                    eventLoop: loop, registry: registry, window: window, offsets: offsets, store: store,
                    presence: presence),
                eventLoop: loop)
        }
        inboxes = shards.map { _ in ShardInbox() }
    }

    /// The shard of `loop`. Must be called on that loop.
    func shard(on loop: any EventLoop) -> LoopShard {
        for shard in shards where shard.eventLoop === loop {
            return shard.value
        }
        preconditionFailure("event loop outside the hub's group")
    }

    // MARK: - NotificationSink

    func makeBatch() -> FrameBatch {
        FrameBatch(routing: routing)
    }

    var received: UInt64 { nextSequence.load(ordering: .relaxed) }

    func receive(_ batch: FrameBatch, from producer: any NotificationProducer) -> NotificationDemand {
        let bytes = batch.byteCount
        let first = nextSequence.wrappingAdd(UInt64(batch.count), ordering: .relaxed).oldValue
        let notifications = batch.notifications(firstSequence: first)
        let full = backlog.add(bytes) ?? true
        let completion = BatchCompletion(shards: shards.count, bytes: bytes, backlog: backlog, producer: producer)
        let receivedAt = NIODeadline.now()
        for (shard, inbox) in zip(shards, inboxes)
        where inbox.append(ShardInbox.Entry(batch: notifications, completion: completion, receivedAt: receivedAt)) {
            shard.eventLoop.execute {
                shard.value.drain(inbox)
            }
        }
        return full ? .stop : .more
    }

    // MARK: - PausedWriters

    func resumePausedWriters() {
        for shard in shards {
            shard.eventLoop.execute { shard.value.resumePausedWriters() }
        }
    }

    // MARK: - Every shard

    /// Runs `body` on every shard's loop and waits for all of them.
    func forEachShard(_ body: @escaping @Sendable (LoopShard) -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            for shard in shards {
                group.addTask {
                    try? await shard.eventLoop.submit { body(shard.value) }.get()
                }
            }
        }
    }

    // MARK: - SocketRevoker

    func disconnect(matching filter: JSONValue, reason: CloseReason) {
        for shard in shards {
            shard.eventLoop.execute { shard.value.disconnect(matching: filter, reason: reason) }
        }
    }

    // MARK: - PresenceWatchers

    var isWatched: Bool { (presence?.watchers.load(ordering: .relaxed) ?? 0) > 0 }

    func presenceChanged(_ signal: PresenceSignal) {
        var writer = JSONWriter(capacity: 128)
        writer.value(signal.frame)
        let frame = MessageFrames.textFrame(writer.bytes)
        let key = ChannelKey(signal.channel)
        for shard in shards {
            shard.eventLoop.execute { shard.value.presenceChanged(key, frame: frame) }
        }
    }
}
