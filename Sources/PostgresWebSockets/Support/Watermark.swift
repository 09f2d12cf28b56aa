import Synchronization

/// The levels of a queue at which its producer is told to stop (`high`) and, once it has
/// stopped, to go on again (`low`). The gap between them keeps a producer that hovers
/// around one level from being stopped and woken on every item.
struct Watermark: Sendable, Equatable {
    let low: Int
    let high: Int

    init(low: Int, high: Int) {
        precondition(0 <= low && low < high, "a watermark needs 0 <= low < high")
        self.low = low
        self.high = high
    }
}

/// A level shared by one side that adds (a producer on its own thread) and one that takes
/// away (consumers on other threads), with the producer's stop/go decided by a `Watermark`.
///
/// Used for the frames handed to the event loops (the listener stops reading PostgreSQL) and
/// for the client messages queued towards PostgreSQL (sockets stop being read).
final class WatermarkedLevel: Sendable {
    let marks: Watermark
    private let level = Atomic<Int>(0)
    /// Set while a producer was told to stop and nobody has told it to go on yet.
    private let stopped = Atomic<Bool>(false)

    init(_ marks: Watermark) {
        self.marks = marks
    }

    var value: Int { level.load(ordering: .relaxed) }

    /// Adds `amount`, unless that would take the level past `limit` (then nil: nothing added).
    /// True when the producer must stop until `take` returns true.
    func add(_ amount: Int, limit: Int = .max) -> Bool? {
        guard let after = level.update({ $0 <= limit - amount ? $0 + amount : nil }) else { return nil }
        guard after >= marks.high else { return false }
        stopped.store(true, ordering: .sequentiallyConsistent)
        // Consumers may have taken the level below `low` between the add and the store, and
        // saw no stopped producer to wake: then the producer goes on instead of waiting.
        if level.load(ordering: .sequentiallyConsistent) <= marks.low,
            stopped.exchange(false, ordering: .sequentiallyConsistent)
        {
            return false
        }
        return true
    }

    /// Takes `amount` away; true exactly once per stop, when the level fell to `low` while a
    /// producer was stopped: the caller must wake it.
    func take(_ amount: Int) -> Bool {
        let after = level.subtract(amount, ordering: .sequentiallyConsistent).newValue
        return after <= marks.low && stopped.load(ordering: .sequentiallyConsistent)
            && stopped.exchange(false, ordering: .sequentiallyConsistent)
    }

    /// Wakes a stopped producer without a change of level (the consumers went away).
    func release() -> Bool {
        stopped.exchange(false, ordering: .sequentiallyConsistent)
    }
}
