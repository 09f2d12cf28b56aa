#if canImport(Glibc)
    import Glibc
#endif

/// The two clocks of the benchmark. Latencies cross processes (sender, server, workers),
/// so they use the wall clock, CLOCK_REALTIME in microseconds, read in every process of
/// this one machine. Pacing and timeouts use the monotonic clock.
enum Clock {
    /// CLOCK_REALTIME in microseconds since 1970.
    static func wallMicros() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
    }

    /// CLOCK_MONOTONIC in seconds.
    static func monotonic() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    /// Sleeps until the monotonic clock reads `deadline` (seconds).
    static func sleep(until deadline: Double) {
        var target = timespec(tv_sec: Int(deadline), tv_nsec: Int((deadline - Double(Int(deadline))) * 1e9))
        while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &target, nil) == EINTR {}
    }

    static func sleep(seconds: Double) {
        sleep(until: monotonic() + seconds)
    }
}
