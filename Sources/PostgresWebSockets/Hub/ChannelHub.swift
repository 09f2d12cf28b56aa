import NIOCore
import Synchronization

/// Routes notifications from the listener thread to the event loops. Each loop has its
/// own shard; a batch is handed to every shard in one task, so a loop takes the batch in
/// one pass and no lock is held while sockets are written.
public final class ChannelHub: Sendable {
    private let shards: [NIOLoopBoundBox<LoopShard>]
    /// Frame bytes dispatched and not yet written by every shard.
    let budget = DeliveryBudget(limit: 4 << 20)

    public init(group: any EventLoopGroup) {
        shards = group.makeIterator().map { loop in
            NIOLoopBoundBox.makeBoxSendingValue(LoopShard(eventLoop: loop), eventLoop: loop)
        }
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
        let remaining = ShardCountdown(shards.count)
        let budget = self.budget
        for shard in shards {
            shard.eventLoop.execute {
                shard.value.deliver(batch)
                if remaining.finishOne() { budget.give(bytes) }
            }
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

/// Counts the shards that still have to deliver one batch.
private final class ShardCountdown: Sendable {
    private let remaining: Atomic<Int>
    init(_ count: Int) { remaining = Atomic(count) }
    /// True for the last shard.
    func finishOne() -> Bool { remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 }
}
