/// A log-linear latency histogram in the spirit of HdrHistogram: values (microseconds) below
/// 128 have their own bucket; above, every power-of-two range is cut into 64 buckets, so a
/// reported percentile is within 1/128 (0.8 %) of the recorded value. Fixed size (3,712
/// counters), so recording is an index computation and an increment, and merging two
/// histograms (from event loops, from worker processes) is adding their counters.
struct Histogram: Sendable, Codable {
    static let linearLimit = 128
    static let subBuckets = 64
    static let bucketCount = linearLimit + 56 * subBuckets

    private(set) var counts: [Int]
    private(set) var count = 0
    private(set) var sum: Int64 = 0
    private(set) var min = Int64.max
    private(set) var max = Int64.min
    /// Values below zero, recorded as zero: a wall clock stepped backwards mid-run.
    private(set) var negatives = 0

    init() {
        counts = Array(repeating: 0, count: Self.bucketCount)
    }

    static func index(of value: Int64) -> Int {
        guard value >= Int64(linearLimit) else { return Int(value) }
        let msb = 63 - value.leadingZeroBitCount
        let shift = msb - 6
        let mantissa = Int(value >> Int64(shift))
        return linearLimit + (shift - 1) * subBuckets + (mantissa - subBuckets)
    }

    /// The middle of a bucket's range.
    static func value(at index: Int) -> Double {
        guard index >= linearLimit else { return Double(index) }
        let shift = (index - linearLimit) / subBuckets + 1
        let mantissa = (index - linearLimit) % subBuckets + subBuckets
        let low = Double(mantissa) * Double(Int64(1) << Int64(shift))
        let width = Double(Int64(1) << Int64(shift))
        return low + (width - 1) / 2
    }

    mutating func record(_ value: Int64) {
        var value = value
        if value < 0 {
            negatives += 1
            value = 0
        }
        counts[Self.index(of: value)] += 1
        count += 1
        sum += value
        if value < min { min = value }
        if value > max { max = value }
    }

    mutating func merge(_ other: Histogram) {
        guard other.count > 0 else { return }
        for (index, n) in other.counts.enumerated() where n != 0 {
            counts[index] += n
        }
        count += other.count
        sum += other.sum
        negatives += other.negatives
        min = Swift.min(min, other.min)
        max = Swift.max(max, other.max)
    }

    /// The value at `percentile` (0...100), nil when empty. The exact min and max are
    /// returned at the ends.
    func percentile(_ percentile: Double) -> Double? {
        guard count > 0 else { return nil }
        if percentile <= 0 { return Double(min) }
        if percentile >= 100 { return Double(max) }
        let rank = Int((percentile / 100 * Double(count)).rounded(.up))
        var seen = 0
        for (index, n) in counts.enumerated() where n != 0 {
            seen += n
            if seen >= rank { return Swift.min(Swift.max(Self.value(at: index), Double(min)), Double(max)) }
        }
        return Double(max)
    }

    var mean: Double? { count > 0 ? Double(sum) / Double(count) : nil }

    // Sparse coding: [[index, count], ...] keeps worker replies small.
    private enum CodingKeys: String, CodingKey { case buckets, count, sum, min, max, negatives }

    init(from decoder: any Decoder) throws {
        self.init()
        let container = try decoder.container(keyedBy: CodingKeys.self)
        for pair in try container.decode([[Int]].self, forKey: .buckets) where pair.count == 2 {
            counts[pair[0]] = pair[1]
        }
        count = try container.decode(Int.self, forKey: .count)
        sum = try container.decode(Int64.self, forKey: .sum)
        min = try container.decode(Int64.self, forKey: .min)
        max = try container.decode(Int64.self, forKey: .max)
        negatives = try container.decode(Int.self, forKey: .negatives)
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        let pairs = counts.enumerated().filter { $0.element != 0 }.map { [$0.offset, $0.element] }
        try container.encode(pairs, forKey: .buckets)
        try container.encode(count, forKey: .count)
        try container.encode(sum, forKey: .sum)
        try container.encode(min, forKey: .min)
        try container.encode(max, forKey: .max)
        try container.encode(negatives, forKey: .negatives)
    }
}

/// Exact percentiles of a small sample (per-NOTIFY figures: hundreds to thousands).
func exactPercentile(_ sorted: [Int64], _ percentile: Double) -> Double? {
    guard !sorted.isEmpty else { return nil }
    let rank = Swift.max(1, Int((percentile / 100 * Double(sorted.count)).rounded(.up)))
    return Double(sorted[Swift.min(rank, sorted.count) - 1])
}
