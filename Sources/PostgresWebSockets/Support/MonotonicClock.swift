#if canImport(Glibc)
    import Glibc
#endif

/// Seconds on the monotonic clock, for timeouts and outage lengths on the database threads.
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

extension Duration {
    /// For poll(2) timeouts on the database threads.
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}

/// Seconds with two decimals, for log lines (`outage_seconds`).
func formatSeconds(_ value: Double) -> String {
    let hundredths = Int((value * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
}
