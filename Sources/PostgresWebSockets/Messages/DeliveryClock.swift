import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Wall-clock timestamps in microseconds that never repeat within a process.
///
/// PostgreSQL merges identical channel+payload pairs sent in one transaction. Batched
/// envelopes carry this timestamp, so two identical texts sent back to back stay distinct.
public final class DeliveryClock: Sendable {
    public static let shared = DeliveryClock()
    private let last = Atomic<Int64>(0)

    public func nextMicroseconds() -> Int64 {
        let now = Self.wallClockMicroseconds()
        var current = last.load(ordering: .relaxed)
        while true {
            let candidate = max(now, current + 1)
            let (exchanged, original) = last.compareExchange(
                expected: current, desired: candidate, ordering: .relaxed)
            if exchanged { return candidate }
            current = original
        }
    }

    public static func wallClockMicroseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
    }

    public static func now() -> Double {
        Double(wallClockMicroseconds()) / 1_000_000
    }
}
