import NIOCore

/// Delivery latencies in Prometheus' bucket shape, counted by one loop in plain integers: the
/// fan-out path pays a comparison or four and an increment per notification, no atomic.
public struct LatencyHistogram: Equatable, Sendable {
    /// Upper bounds, in seconds.
    public static let bounds: [Double] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
    ]
    private static let boundsNanoseconds: [Int64] = bounds.map { Int64($0 * 1e9) }

    /// Per bucket (the last: above every bound).
    public private(set) var counts = [Int](repeating: 0, count: LatencyHistogram.bounds.count + 1)
    public private(set) var sumNanoseconds: Int64 = 0

    public var count: Int { counts.reduce(0, +) }

    mutating func record(_ latency: TimeAmount) {
        let nanoseconds = max(0, latency.nanoseconds)
        sumNanoseconds &+= nanoseconds
        // Binary search over the 12 bounds.
        var low = 0
        var high = Self.boundsNanoseconds.count
        while low < high {
            let middle = (low + high) / 2
            if nanoseconds <= Self.boundsNanoseconds[middle] { high = middle } else { low = middle + 1 }
        }
        counts[low] += 1
    }

    mutating func add(_ other: LatencyHistogram) {
        for index in counts.indices { counts[index] += other.counts[index] }
        sumNanoseconds &+= other.sumNanoseconds
    }
}
