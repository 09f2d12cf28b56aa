import Testing

@testable import PostgresWebSockets

private typealias Machine = JWKSRefreshStateMachine
private let policy = Machine.Policy()

@Suite("JWKS refresh: Cache-Control, backoff, the unknown-kid bound")
struct JWKSRefreshTests {
    @Test("max-age is read from Cache-Control: case, quotes, other directives, several fields")
    func maxAge() {
        #expect(Machine.maxAge(cacheControl: ["max-age=300"]) == 300)
        #expect(Machine.maxAge(cacheControl: ["public, max-age=60, must-revalidate"]) == 60)
        #expect(Machine.maxAge(cacheControl: ["Public,MAX-AGE=5"]) == 5)
        #expect(Machine.maxAge(cacheControl: [#"max-age="120""#]) == 120)
        #expect(Machine.maxAge(cacheControl: ["public", "max-age=7"]) == 7, "directives of every field line count")
        #expect(Machine.maxAge(cacheControl: ["max-age=10, max-age=20"]) == 10, "the first occurrence wins")
        #expect(Machine.maxAge(cacheControl: ["max-age=99999999999999999999999"]) == Int(Int32.max))
        #expect(Machine.maxAge(cacheControl: ["s-maxage=100"]) == nil, "for shared caches, not for this client")
    }

    @Test("absent or garbage max-age gives nil; no-cache and no-store give 0")
    func maxAgeGarbage() {
        #expect(Machine.maxAge(cacheControl: []) == nil)
        #expect(Machine.maxAge(cacheControl: [""]) == nil)
        #expect(Machine.maxAge(cacheControl: ["public"]) == nil)
        for garbage in ["max-age=abc", "max-age=", "max-age", "max-age=-5", "max-age=1.5", "max-age=+3", "max-age=1 0"]
        {
            #expect(Machine.maxAge(cacheControl: [garbage]) == nil, "\(garbage)")
        }
        #expect(
            Machine.maxAge(cacheControl: ["max-age=abc, max-age=60"]) == nil, "a broken first occurrence is not skipped"
        )
        #expect(Machine.maxAge(cacheControl: ["no-cache"]) == 0)
        #expect(Machine.maxAge(cacheControl: ["max-age=600, no-store"]) == 0)
    }

    @Test("freshness: max-age less Age, 10 minutes without one, never below 30 s nor above a day")
    func freshness() {
        func fresh(_ cacheControl: [String], age: [String] = []) -> Double {
            Machine.freshness(cacheControl: cacheControl, age: age, policy: policy)
        }
        #expect(fresh(["max-age=300"]) == 300)
        #expect(fresh([]) == 600, "absent: the default")
        #expect(fresh(["max-age=soon"]) == 600, "garbage: the default")
        #expect(fresh(["max-age=5"]) == 30, "below the floor: 30 s")
        #expect(fresh(["max-age=0"]) == 30)
        #expect(fresh(["no-store"]) == 30)
        #expect(fresh(["max-age=31536000"]) == 86_400, "a year: capped at a day")
        #expect(fresh(["max-age=300"], age: ["100"]) == 200, "a cached response's Age is its time spent")
        #expect(fresh(["max-age=300"], age: ["290"]) == 30)
        #expect(fresh(["max-age=300"], age: ["old"]) == 300, "a garbage Age is ignored")
        #expect(fresh([], age: ["100"]) == 600, "Age does not shorten the default")
    }

    @Test("backoff: 1 s doubling to 60 s, then 60 s")
    func backoffSequence() {
        let delays = (1...9).map { Machine.retryDelay(afterFailures: $0, policy: policy) }
        #expect(delays == [1, 2, 4, 8, 16, 32, 60, 60, 60])
        #expect(Machine.retryDelay(afterFailures: 10_000, policy: policy) == 60, "no overflow after many failures")
    }

    @Test("the first fetch is due at once; a good one is due again after its freshness")
    func schedule() {
        var machine = Machine(policy: policy, now: 100)
        #expect(machine.isDue(at: 100))
        machine.fetchStarted(at: 100)
        #expect(machine.fetchSucceeded(at: 101, freshFor: 300) == nil)
        #expect(!machine.isDue(at: 400))
        #expect(machine.isDue(at: 401))
    }

    @Test("failures retry with backoff, only the first is flagged, and the success after them reports the run")
    func failuresAndRecovery() {
        var machine = Machine(policy: policy, now: 0)
        var now = 0.0
        var failures: [Machine.Failure] = []
        for _ in 0..<8 {
            #expect(machine.isDue(at: now))
            machine.fetchStarted(at: now)
            failures.append(machine.fetchFailed(at: now))
            #expect(!machine.isDue(at: now + failures.last!.retryIn - 0.001))
            now += failures.last!.retryIn
        }
        #expect(failures.map(\.retryIn) == [1, 2, 4, 8, 16, 32, 60, 60])
        #expect(failures.map(\.isFirst) == [true] + Array(repeating: false, count: 7))
        machine.fetchStarted(at: now)
        #expect(machine.fetchSucceeded(at: now, freshFor: 600) == Machine.Recovery(failures: 8, seconds: now))
        #expect(machine.nextFetch == now + 600)
        // A new run starts over.
        machine.fetchStarted(at: now + 600)
        #expect(machine.fetchFailed(at: now + 600) == Machine.Failure(failures: 1, retryIn: 1))
    }

    @Test("an unknown kid brings the next fetch forward, but never sooner than 30 s after the last fetch started")
    func unknownKidBound() {
        var machine = Machine(policy: policy, now: 0)
        machine.fetchStarted(at: 0)
        _ = machine.fetchSucceeded(at: 0.5, freshFor: 600)
        machine.unknownKeySeen(at: 1)
        #expect(machine.nextFetch == 30, "30 s after the fetch started, not at once")
        for second in 2..<30 { machine.unknownKeySeen(at: Double(second)) }
        #expect(machine.nextFetch == 30, "more unknown kids change nothing")
        #expect(!machine.isDue(at: 29.99))
        #expect(machine.isDue(at: 30))
        machine.fetchStarted(at: 30)
        _ = machine.fetchSucceeded(at: 30.2, freshFor: 600)
        #expect(machine.nextFetch == 630.2, "without another unknown kid, freshness rules")
        machine.unknownKeySeen(at: 200)
        #expect(machine.nextFetch == 200, "long after the last fetch: at once")
    }

    @Test("an unknown kid never delays a fetch already due sooner (a retry while failing)")
    func unknownKidNeverDelays() {
        var machine = Machine(policy: policy, now: 0)
        machine.fetchStarted(at: 0)
        _ = machine.fetchFailed(at: 0)
        machine.unknownKeySeen(at: 0.1)
        #expect(machine.nextFetch == 1, "the 1 s retry stays")
    }

    @Test("a flood of unknown kids for ten minutes costs at most one fetch per 30 s")
    func flood() {
        var machine = Machine(policy: policy, now: 0)
        var fetches: [Double] = []
        var now = 0.0
        while now < 600 {
            machine.unknownKeySeen(at: now)
            if machine.isDue(at: now) {
                machine.fetchStarted(at: now)
                fetches.append(now)
                _ = machine.fetchSucceeded(at: now + 0.05, freshFor: 600)
            }
            now += 0.01
        }
        #expect(fetches.count <= 21)
        #expect(fetches.count >= 19, "and the refreshes it asks for do happen")
        for (earlier, later) in zip(fetches, fetches.dropFirst()) { #expect(later - earlier >= 30 - 1e-6) }
    }
}

@Suite("JWKS URL: checked at start, redacted in logs")
struct JWKSURLTests {
    @Test("http and https URLs with a host pass; anything else is named")
    func problems() {
        #expect(JWKSURL.problem(with: "https://idp.example/.well-known/jwks.json") == nil)
        #expect(JWKSURL.problem(with: "HTTP://127.0.0.1:8080/keys") == nil)
        #expect(JWKSURL.problem(with: "https://[::1]:8443/keys") == nil)
        #expect(JWKSURL.problem(with: "https://user:pw@idp.example/keys") == nil)
        #expect(JWKSURL.problem(with: "ftp://idp.example/keys")?.contains("http") == true)
        #expect(JWKSURL.problem(with: "file:///etc/jwks.json") != nil)
        #expect(JWKSURL.problem(with: "idp.example/keys") != nil)
        #expect(JWKSURL.problem(with: "https:///keys") == "has no host")
        #expect(JWKSURL.problem(with: "https://:443/keys") == "has no host")
        #expect(JWKSURL.problem(with: "https://user@/keys") == "has no host")
        #expect(JWKSURL.problem(with: "https://idp.example/a key") != nil)
        #expect(JWKSURL.problem(with: "https://idp.example/clé") != nil, "non-ASCII: percent-encoded or refused")
        for port in ["0", "65536", "80a", "-1", "999999"] {
            #expect(
                JWKSURL.problem(with: "https://idp.example:\(port)/keys")
                    == "has a port that is not a number from 1 to 65535", "\(port)")
        }
    }

    @Test("the client connects to the host and port (the scheme's by default) and asks for the path and query")
    func targets() {
        #expect(JWKSURL.target("http://127.0.0.1:8080")?.path == "/", "an empty path is /")
        #expect(JWKSURL.target("HTTP://idp.example?x=1#frag")?.path == "/?x=1", "the fragment is never sent")
        #expect(JWKSURL.target("http://idp.example/k")?.port == 80)
        #expect(JWKSURL.target("https://idp.example:/k")?.port == 443)
        #expect(JWKSURL.target("https://idp.example:/k")?.hostHeader == "idp.example")
        #expect(
            JWKSURL.target("https://u@[::1]:8443/k")
                == .init(scheme: "https", host: "::1", port: 8443, hostHeader: "[::1]:8443", path: "/k"))
        #expect(JWKSURL.target("ftp://idp.example/k") == nil)
    }

    @Test("logs show scheme, host, port and path: never user information or the query")
    func redacted() {
        #expect(JWKSURL.redacted("https://idp.example/keys") == "https://idp.example/keys")
        #expect(
            JWKSURL.redacted("HTTPS://alice:s3cret@idp.example:8443/keys?api_key=k#frag")
                == "https://idp.example:8443/keys?...")
        #expect(JWKSURL.redacted("http://token@127.0.0.1:9/") == "http://127.0.0.1:9/")
        #expect(!JWKSURL.redacted("https://a:b@c@idp.example/x").contains("b@c"))
        #expect(JWKSURL.redacted("not a url") == "(unparsable URL)")
    }

    @Test("user information becomes Basic credentials and leaves what the client connects to and asks for")
    func userInfo() {
        #expect(
            JWKSURL.target("https://idp.example/keys")
                == .init(scheme: "https", host: "idp.example", port: 443, hostHeader: "idp.example", path: "/keys"))
        #expect(JWKSURL.basicAuthorization("https://idp.example/keys") == nil)
        #expect(
            JWKSURL.target("https://alice:pw@idp.example:8443/keys?x=1")
                == .init(
                    scheme: "https", host: "idp.example", port: 8443, hostHeader: "idp.example:8443",
                    path: "/keys?x=1"))
        // RFC 7617's example: Aladdin / open sesame.
        #expect(
            JWKSURL.basicAuthorization("https://Aladdin:open%20sesame@idp.example/")
                == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        #expect(JWKSURL.basicAuthorization("https://token@idp.example/") == "Basic dG9rZW46", "a user without password")
    }
}
