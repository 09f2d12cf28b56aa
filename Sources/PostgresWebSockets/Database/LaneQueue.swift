/// The messages of one notifier lane, and what the lane does with them: batches, retries,
/// and the search for a message PostgreSQL refuses. Pure state: the lane thread sends.
struct LaneQueue {
    struct Entry {
        let message: OutgoingMessage
        /// Client messages count against `max-pending-messages`; meta events do not.
        let counted: Bool
    }

    /// The head of the queue: what the lane thread takes its batches from. A batch is a
    /// prefix of it, and the thread may hold that batch's storage while it waits for
    /// PostgreSQL, so appends never touch it (appending to shared storage copies all of it).
    private var front: [Entry] = []
    /// What arrived since `front` was filled, in order behind it.
    private var back: [Entry] = []
    /// After a batch failed for its content, messages are sent one by one until this many
    /// are through, to find the culprit(s) without losing the rest.
    private var isolating = 0
    /// How many entries at the head were handed out as the current batch.
    private var inFlight = 0

    var count: Int { front.count + back.count }
    var isEmpty: Bool { count == 0 }

    /// Queues `entry`; true when the lane was idle (nothing queued), so its thread must be woken.
    mutating func append(_ entry: Entry) -> Bool {
        back.append(entry)
        return count == 1
    }

    /// The next batch: everything queued, up to the limits (at least one message), or a
    /// single message while isolating a refused one.
    mutating func nextBatch(maxNotifications: Int, maxBytes: Int) -> [Entry] {
        precondition(inFlight == 0, "a batch is already in flight")
        if front.isEmpty {
            swap(&front, &back)  // moves, copies nothing
        } else if !back.isEmpty {
            front.append(contentsOf: back)  // after a retry only
            back.removeAll(keepingCapacity: true)
        }
        guard !front.isEmpty else { return [] }
        var end = 1
        if isolating == 0 {
            var notifications = front[0].message.notifications.count
            var bytes = front[0].message.byteCount
            while end < front.count {
                let message = front[end].message
                notifications += message.notifications.count
                bytes += message.byteCount
                if notifications > maxNotifications || bytes > maxBytes { break }
                end += 1
            }
        }
        inFlight = end
        return end == front.count ? front : Array(front[..<end])
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
        let counted = front[..<n].reduce(0) { $0 + ($1.counted ? 1 : 0) }
        if n == front.count {
            front = []  // the thread may still hold this storage: let it go instead of mutating it
        } else {
            front.removeFirst(n)
        }
        isolating = max(0, isolating - n)
        return counted
    }

    /// The head message, for the sender of a refused one.
    var first: Entry? { front.first ?? back.first }
}
