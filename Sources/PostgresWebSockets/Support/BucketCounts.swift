/// Observations counted per bucket, for a Prometheus histogram (`PrometheusText.histogram`).
struct BucketCounts: Sendable {
    /// Upper bounds, ascending.
    let bounds: [Double]
    /// Per bucket; the last is above every bound.
    private(set) var counts: [Int]
    private(set) var sum = 0.0

    init(bounds: [Double]) {
        self.bounds = bounds
        counts = [Int](repeating: 0, count: bounds.count + 1)
    }

    mutating func record(_ value: Double) {
        sum += value
        counts[bounds.firstIndex { value <= $0 } ?? bounds.count] += 1
    }
}
