#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The wall clock, for what is compared with Unix times: JWT `exp`/`nbf` and the
/// `message_delivered_at` of envelopes. Timeouts use the monotonic clock instead.
public enum WallClock {
    public static func microseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
    }

    public static func seconds() -> Double {
        Double(microseconds()) / 1_000_000
    }
}
