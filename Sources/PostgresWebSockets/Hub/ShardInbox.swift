import NIOConcurrencyHelpers
import Synchronization

/// Notification batches waiting for one event loop. The listener thread appends; the loop
/// takes everything at once. When a loop falls behind, the batches queued meanwhile merge
/// into one write pass, one flush per socket, instead of a pass each: the busier the
/// server, the cheaper each delivery.
final class ShardInbox: Sendable {
    struct Entry: Sendable {
        let batch: [Notification]
        let completion: BatchCompletion
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

/// Gives a batch's bytes back to the delivery budget once every shard wrote it.
final class BatchCompletion: Sendable {
    private let remaining: Synchronization.Atomic<Int>
    private let bytes: Int
    private let budget: DeliveryBudget

    init(shards: Int, bytes: Int, budget: DeliveryBudget) {
        self.remaining = Synchronization.Atomic(shards)
        self.bytes = bytes
        self.budget = budget
    }

    func shardFinished() {
        if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            budget.give(bytes)
        }
    }
}
