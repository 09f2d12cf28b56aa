import Synchronization

/// Wall-clock timestamps in microseconds that never repeat within a process.
///
/// PostgreSQL merges identical channel+payload pairs sent in one transaction. Batched
/// envelopes carry this timestamp, so two identical texts sent back to back stay distinct.
public final class UniqueTimestamps: Sendable {
    public static let shared = UniqueTimestamps()
    private let last = Atomic<Int64>(0)

    public init() {}

    public func next() -> Int64 {
        let now = WallClock.microseconds()
        return last.update { max(now, $0 + 1) }!
    }
}
