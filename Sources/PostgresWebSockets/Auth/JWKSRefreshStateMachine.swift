/// When the `JWKSFetcher` fetches its URL, as a state machine over plain numbers (seconds on
/// the monotonic clock), so the policy is tested without a network or a clock:
///
/// - after a good fetch, once the response's freshness runs out (`freshness(...)`: its
///   `Cache-Control: max-age` less its `Age`, 10 minutes when it says nothing usable, never
///   sooner than 30 s nor later than a day);
/// - after a failed fetch, with backoff: 1 s, doubling, at most 60 s, until one succeeds;
/// - sooner when a token named an unknown `kid`, but never sooner than 30 s after the last
///   fetch started, however many such tokens come: an attacker can send unknown kids at will,
///   and must not be able to make the server hammer the URL.
struct JWKSRefreshStateMachine {
    struct Policy: Sendable {
        var defaultFreshness = 600.0
        var minimumFreshness = 30.0
        var maximumFreshness = 86_400.0
        var unknownKeyInterval = 30.0
        var retryInitial = 1.0
        var retryMaximum = 60.0
    }

    /// What the fetcher logs after a failed fetch: a warning only for the first of a run.
    struct Failure: Equatable {
        /// Failed fetches in a row, this one included.
        let failures: Int
        let retryIn: Double
        var isFirst: Bool { failures == 1 }
    }

    /// What the fetcher logs after a good fetch that ends a run of failures.
    struct Recovery: Equatable {
        let failures: Int
        /// From the first failure of the run to this success.
        let seconds: Double
    }

    let policy: Policy
    /// When the next fetch is due.
    private(set) var nextFetch: Double
    private var lastFetchStart: Double?
    private var failing: (since: Double, failures: Int)?

    /// The first fetch is due at once.
    init(policy: Policy, now: Double) {
        self.policy = policy
        self.nextFetch = now
    }

    func isDue(at now: Double) -> Bool { now >= nextFetch }

    mutating func fetchStarted(at now: Double) {
        lastFetchStart = now
    }

    /// A token named a `kid` no key has: fetch now, or as soon as the bound allows.
    mutating func unknownKeySeen(at now: Double) {
        let earliest = lastFetchStart.map { $0 + policy.unknownKeyInterval } ?? now
        nextFetch = min(nextFetch, max(now, earliest))
    }

    /// `freshFor`: what `freshness(...)` made of the response.
    mutating func fetchSucceeded(at now: Double, freshFor: Double) -> Recovery? {
        nextFetch = now + freshFor
        defer { failing = nil }
        return failing.map { Recovery(failures: $0.failures, seconds: now - $0.since) }
    }

    mutating func fetchFailed(at now: Double) -> Failure {
        let failures = (failing?.failures ?? 0) + 1
        failing = (failing?.since ?? now, failures)
        let delay = Self.retryDelay(afterFailures: failures, policy: policy)
        nextFetch = now + delay
        return Failure(failures: failures, retryIn: delay)
    }

    // MARK: - Pure rules

    /// 1 s, 2 s, 4 s, ... at most 60 s (with the default policy): the wait after the n-th failure
    /// in a row. No jitter: one server fetches one URL.
    static func retryDelay(afterFailures failures: Int, policy: Policy) -> Double {
        let doublings = max(0, min(failures - 1, 62))
        return min(policy.retryInitial * Double(1 << doublings), policy.retryMaximum)
    }

    /// How long a fetched set stays fresh: `max-age` less `Age` (RFC 9111 4.2), the default when
    /// `Cache-Control` has no usable `max-age`, bounded below and above by the policy.
    static func freshness(cacheControl: [String], age: [String], policy: Policy) -> Double {
        let lifetime: Double
        if let maxAge = maxAge(cacheControl: cacheControl) {
            lifetime = Double(maxAge) - Double(deltaSeconds(age.first ?? "") ?? 0)
        } else {
            lifetime = policy.defaultFreshness
        }
        return min(max(lifetime, policy.minimumFreshness), policy.maximumFreshness)
    }

    /// The `max-age` of `Cache-Control` field values, in seconds: its first occurrence (RFC
    /// 9111 4.2.1), 0 when `no-cache` or `no-store` says to fetch every time, nil when there is
    /// none or it is not a number. Directive names are case-insensitive; a quoted value is
    /// accepted (RFC 9111 5.2 asks senders not to, and recipients to cope).
    static func maxAge(cacheControl values: [String]) -> Int? {
        var first: Int?? = nil
        for value in values {
            for directive in value.split(separator: ",") {
                let parts = directive.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = parts[0].trimming().lowercased()
                if name == "no-cache" || name == "no-store" { return 0 }
                guard name == "max-age", first == nil else { continue }
                var argument = parts.count == 2 ? parts[1].trimming() : ""
                if argument.count >= 2, argument.hasPrefix("\""), argument.hasSuffix("\"") {
                    argument = argument.dropFirst().dropLast()
                }
                first = .some(deltaSeconds(argument))
            }
        }
        return first ?? nil
    }

    /// delta-seconds (RFC 9111 1.2.2): digits only; a value too large for an Int is taken as a
    /// very long time.
    static func deltaSeconds(_ text: some StringProtocol) -> Int? {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
            return nil
        }
        return Int(text) ?? Int(Int32.max)
    }
}
