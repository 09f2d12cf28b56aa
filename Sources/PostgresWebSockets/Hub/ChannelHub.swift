import NIOCore

/// Routes notifications from the listener thread to the event loops. Each loop has its
/// own shard; a batch is handed to every shard in one task, so a loop takes the batch in
/// one pass and no lock is held while sockets are written.
public final class ChannelHub: Sendable {
    private let shards: [NIOLoopBoundBox<LoopShard>]

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
        for shard in shards {
            shard.eventLoop.execute {
                shard.value.deliver(batch)
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
