import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// Notification batches waiting for one event loop. The listener thread appends; the loop
/// takes everything at once. When a loop falls behind, the batches queued meanwhile merge
/// into one write pass, one flush per socket, instead of a pass each: the busier the
/// server, the cheaper each delivery.
final class ShardInbox: Sendable {
    struct Entry: Sendable {
        let batch: [Notification]
        let completion: BatchCompletion
        /// When the hub took the batch from the listener: where delivery latency starts.
        let receivedAt: NIODeadline
    }

    private let entries = NIOLockedValueBox<[Entry]>([])

    /// Queues `entry`; true when the inbox was empty, so the caller must schedule a drain.
    func append(_ entry: Entry) -> Bool {
        entries.withLockedValue { entries in
            entries.append(entry)
            return entries.count == 1
        }
    }

    func takeAll() -> [Entry] {
        entries.withLockedValue { entries in
            defer { entries = [] }
            return entries
        }
    }
}

/// Gives a batch's bytes back to the hub's backlog once every shard wrote it, and wakes
/// the listener when that brought the backlog down to its low watermark.
final class BatchCompletion: Sendable {
    private let remaining: Synchronization.Atomic<Int>
    private let bytes: Int
    private let backlog: WatermarkedLevel
    private let producer: any NotificationProducer

    init(shards: Int, bytes: Int, backlog: WatermarkedLevel, producer: any NotificationProducer) {
        self.remaining = Synchronization.Atomic(shards)
        self.bytes = bytes
        self.backlog = backlog
        self.producer = producer
    }

    func shardFinished() {
        if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0, backlog.take(bytes) {
            producer.produceMore()
        }
    }
}
