/// The messages of one notifier lane, and what the lane does with them: batches, retries,
/// and the search for a message PostgreSQL refuses. Pure state: the lane thread sends.
struct LaneQueue {
    struct Entry {
        let message: OutgoingMessage
        /// Client messages count against `max-pending-messages`; meta events do not.
        let counted: Bool
    }

    private var entries: [Entry] = []
    private var head = 0
    /// After a batch failed for its content, messages are sent one by one until this many
    /// are through, to find the culprit(s) without losing the rest.
    private var isolating = 0
    /// How many entries at the head were handed out as the current batch.
    private var inFlight = 0

    var count: Int { entries.count - head }
    var isEmpty: Bool { count == 0 }

    /// Queues `entry`; true when the lane was idle (nothing queued), so its thread must be woken.
    mutating func append(_ entry: Entry) -> Bool {
        entries.append(entry)
        return count == 1
    }

    /// The next batch: everything queued, up to the limits (at least one message), or a
    /// single message while isolating a refused one.
    mutating func nextBatch(maxNotifications: Int, maxBytes: Int) -> ArraySlice<Entry> {
        precondition(inFlight == 0, "a batch is already in flight")
        var end = head
        if isolating > 0, !isEmpty {
            end = head + 1
        } else {
            var notifications = 0
            var bytes = 0
            while end < entries.count {
                let message = entries[end].message
                let size = message.byteCount
                if end > head,
                    notifications + message.notifications.count > maxNotifications || bytes + size > maxBytes
                {
                    break
                }
                notifications += message.notifications.count
                bytes += size
                end += 1
            }
        }
        inFlight = end - head
        return entries[head..<end]
    }

    enum Outcome {
        case committed
        /// The connection failed: the batch stays at the head, to be sent again.
        case connectionFailed
        /// PostgreSQL refused the statement itself.
        case refused(DatabaseError)
    }

    enum FinishAction: Equatable {
        /// The batch left the queue; `counted` client messages among them.
        case completed(count: Int, counted: Int)
        /// One message left the queue because PostgreSQL refused it: tell its sender.
        case rejected(counted: Int)
        /// Nothing left the queue: send again (on a new connection for a connection failure).
        case retry
    }

    mutating func finish(_ outcome: Outcome) -> FinishAction {
        let sent = inFlight
        inFlight = 0
        switch outcome {
        case .committed:
            return .completed(count: sent, counted: remove(sent))
        case .connectionFailed:
            return .retry
        case .refused where sent == 1:
            return .rejected(counted: remove(1))
        case .refused:
            isolating = max(isolating, sent)
            return .retry
        }
    }

    private mutating func remove(_ n: Int) -> Int {
        let counted = entries[head..<head + n].reduce(0) { $0 + ($1.counted ? 1 : 0) }
        head += n
        isolating = max(0, isolating - n)
        // Compact once the consumed prefix is as large as what remains: amortized O(1).
        if head > 64, head * 2 >= entries.count {
            entries.removeFirst(head)
            head = 0
        }
        return counted
    }

    /// The head message, for the sender of a refused one.
    var first: Entry? { isEmpty ? nil : entries[head] }
}
