/// Capped exponential backoff with jitter for reconnecting to PostgreSQL: 100 ms, doubling,
/// at most 5 s, each delay drawn from [50%, 100%] of its step so that many instances
/// restarting together do not reconnect in lockstep.
struct Backoff {
    var initial = 0.1
    var maximum = 5.0
    private var step: Double? = nil

    init(initial: Double = 0.1, maximum: Double = 5.0) {
        self.initial = initial
        self.maximum = maximum
    }

    mutating func nextDelay() -> Double {
        let current = step.map { min($0 * 2, maximum) } ?? initial
        step = current
        return current * Double.random(in: 0.5...1.0)
    }

    mutating func reset() {
        step = nil
    }
}
