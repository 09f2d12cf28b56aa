import NIOCore

/// Routes notifications from the listener thread to the event loops. Each loop has its
/// own shard and inbox; the only lock on the way is the inbox's, taken once per batch by
/// the listener and once per pass by the loop, never while sockets are written.
public final class ChannelHub: Sendable {
    private let shards: [NIOLoopBoundBox<LoopShard>]
    private let inboxes: [ShardInbox]
    /// Frame bytes dispatched and not yet written by every shard.
    let budget = DeliveryBudget(limit: 4 << 20)

    public init(group: any EventLoopGroup) {
        shards = group.makeIterator().map { loop in
            NIOLoopBoundBox.makeBoxSendingValue(LoopShard(eventLoop: loop), eventLoop: loop)
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

    public func dispatch(_ batch: [Notification]) {
        let bytes = batch.reduce(0) { $0 + $1.frame.readableBytes }
        budget.take(bytes)
        let completion = BatchCompletion(shards: shards.count, bytes: bytes, budget: budget)
        for (shard, inbox) in zip(shards, inboxes)
        where inbox.append(ShardInbox.Entry(batch: batch, completion: completion)) {
            shard.eventLoop.execute {
                shard.value.drain(inbox)
            }
        }
    }

    /// Lets every socket paused by a congested queue to PostgreSQL read again.
    public func resumePausedSessions() {
        for shard in shards {
            shard.eventLoop.execute { shard.value.resumePausedSessions() }
        }
    }

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

    func sessionCount() async -> Int {
        var total = 0
        for shard in shards {
            total += (try? await shard.eventLoop.submit { shard.value.sessionCount }.get()) ?? 0
        }
        return total
    }
}
