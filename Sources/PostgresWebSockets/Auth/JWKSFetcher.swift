import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle

/// Fetches the JWK Set at `jwks-url` and installs its keys in the `JWTKeyStore`, as a
/// `Service`: at start, again when the response's freshness runs out, sooner when a handshake
/// met an unknown `kid` (at most once per `unknownKeyInterval`), and with backoff while it
/// fails; `JWKSRefreshStateMachine` decides when. A failed fetch keeps the last good keys.
///
/// It is the store's only writer and the only task that waits on the network for keys:
/// handshakes never wait for it. Its HTTP client (`JWKSHTTPClient`) runs on the bridge's event
/// loops; a fetch is bounded in time (`fetchTimeout`, the whole exchange) and size
/// (`maxResponseBytes`), and follows no redirect (one could lead from https to http).
///
/// Logs: the first load and every change of keys (info), the first failure of a run (warning)
/// and the success that ends it (notice); retries only at debug. Lines name the URL without
/// user information or query, and statuses; never keys.
final class JWKSFetcher: Service, Sendable {
    private let policy: JWKSRefreshStateMachine.Policy
    private let store: JWTKeyStore
    private let group: any EventLoopGroup
    private let client: JWKSHTTPClient
    private let logger: Logger

    init(
        settings: JWKSSettings, client: JWKSHTTPClient, store: JWTKeyStore, group: any EventLoopGroup, logger: Logger
    ) {
        self.client = client
        self.policy = JWKSRefreshStateMachine.Policy(
            defaultFreshness: settings.defaultRefresh.seconds, minimumFreshness: settings.minimumRefresh.seconds,
            maximumFreshness: settings.maximumRefresh.seconds, unknownKeyInterval: settings.unknownKeyInterval.seconds,
            retryInitial: settings.retryInitial.seconds, retryMaximum: settings.retryMaximum.seconds)
        self.store = store
        self.group = group
        var logger = logger
        logger[.jwksURL] = "\(JWKSURL.redacted(settings.url))"
        self.logger = logger
    }

    func run() async throws {
        await cancelWhenGracefulShutdown { await self.refreshUntilCancelled() }
    }

    private func refreshUntilCancelled() async {
        var machine = JWKSRefreshStateMachine(policy: policy, now: monotonicSeconds())
        var wakes = store.wakes.makeAsyncIterator()
        var timer: Scheduled<Void>? = nil
        defer { timer?.cancel() }
        var loadedKids: [String?]? = nil
        while !Task.isCancelled {
            let now = monotonicSeconds()
            if store.takeUnknownKeySighting() { machine.unknownKeySeen(at: now) }
            if machine.isDue(at: now) {
                machine.fetchStarted(at: now)
                let outcome = await fetch()
                if Task.isCancelled { return }
                switch outcome {
                case .success(let fetched):
                    store.install(fetched: fetched.keys)
                    let recovery = machine.fetchSucceeded(at: monotonicSeconds(), freshFor: fetched.freshFor)
                    logSuccess(fetched, recovery: recovery, previousKids: loadedKids)
                    loadedKids = fetched.keys.kids
                case .failure(let failure):
                    logFailure(failure, machine.fetchFailed(at: monotonicSeconds()), keysLoaded: loadedKids != nil)
                }
                continue  // an unknown kid may have been seen meanwhile
            }
            timer?.cancel()
            let store = self.store
            timer = group.any().scheduleTask(in: .nanoseconds(Int64((machine.nextFetch - now) * 1e9))) {
                store.wakeFetcher()
            }
            // nil once the task is cancelled (graceful shutdown).
            guard await wakes.next() != nil else { return }
        }
    }

    // MARK: - One fetch

    struct Fetched: Sendable {
        let keys: JWTKeySet
        /// Seconds until the next fetch, from the response's caching headers.
        let freshFor: Double
    }

    /// The URL's keys, or why not, within `fetchTimeout` for the whole exchange.
    func fetch() async -> Result<Fetched, JWKSFetchFailure> {
        let response: JWKSHTTPResponse
        switch await client.get(on: group.any()) {
        case .success(let r): response = r
        case .failure(let failure): return .failure(failure)
        }
        let keys: JWTKeySet
        do {
            keys = try JWTKeySet(jwks: Array(buffer: response.body))
        } catch {
            // Reasons name the member at fault, never key material (`JWTKeyError`).
            return .failure(JWKSFetchFailure(reason: "not a usable JWK Set: \(error.reason)"))
        }
        let freshFor = JWKSRefreshStateMachine.freshness(
            cacheControl: response.headers["cache-control"], age: response.headers["age"], policy: policy)
        return .success(Fetched(keys: keys, freshFor: freshFor))
    }

    // MARK: - Logs

    private func logSuccess(_ fetched: Fetched, recovery: JWKSRefreshStateMachine.Recovery?, previousKids: [String?]?) {
        let next = formatSeconds(fetched.freshFor)
        if let recovery {
            logger.log(
                .notice, "JWKS fetched again",
                [
                    .failures: "\(recovery.failures)", .outageSeconds: "\(formatSeconds(recovery.seconds))",
                    .keys: "\(fetched.keys.count)", .nextFetchSeconds: "\(next)",
                ])
        }
        if previousKids == nil {
            logger.log(.info, "JWKS loaded", [.keys: "\(fetched.keys.count)", .nextFetchSeconds: "\(next)"])
        } else if previousKids != fetched.keys.kids {
            logger.log(.info, "JWKS keys changed", [.keys: "\(fetched.keys.count)", .nextFetchSeconds: "\(next)"])
        } else if recovery == nil {
            logger.log(.debug, "JWKS unchanged", [.keys: "\(fetched.keys.count)", .nextFetchSeconds: "\(next)"])
        }
    }

    private func logFailure(_ failure: JWKSFetchFailure, _ state: JWKSRefreshStateMachine.Failure, keysLoaded: Bool) {
        var metadata: LogMetadata = [
            .error: "\(failure.reason)", .failures: "\(state.failures)",
            .nextFetchSeconds: "\(formatSeconds(state.retryIn))",
        ]
        if let status = failure.status { metadata.representation[LogKey.httpStatus.rawValue] = "\(status)" }
        if state.isFirst {
            let message =
                keysLoaded ? "JWKS fetch failed, keeping the last keys" : "JWKS fetch failed, no keys from it yet"
            logger.log(.warning, "\(message)", metadata)
        } else {
            logger.log(.debug, "JWKS fetch failed again", metadata)
        }
    }
}

extension JWTKeySet {
    /// The key IDs in order: tells a changed set from the same one fetched again.
    var kids: [String?] { keys.map(\.kid) }
}
