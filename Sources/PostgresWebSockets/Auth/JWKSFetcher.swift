import AsyncHTTPClient
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// Fetches the JWK Set at `jwks-url` and installs its keys in the `JWTKeyStore`, as a
/// `Service`: at start, again when the response's freshness runs out, sooner when a handshake
/// met an unknown `kid` (at most once per `unknownKeyInterval`), and with backoff while it
/// fails; `JWKSRefreshStateMachine` decides when. A failed fetch keeps the last good keys.
///
/// It is the store's only writer and the only task that waits on the network for keys:
/// handshakes never wait for it. Its HTTP client (AsyncHTTPClient) runs on the bridge's event
/// loops; a fetch is bounded in time (`fetchTimeout`, the whole exchange) and size
/// (`maxResponseBytes`), and follows no redirect (one could lead from https to http).
///
/// Logs: the first load and every change of keys (info), the first failure of a run (warning)
/// and the success that ends it (notice); retries only at debug. Lines name the URL without
/// user information or query, and statuses; never keys.
final class JWKSFetcher: Service, Sendable {
    private let settings: JWKSSettings
    private let policy: JWKSRefreshStateMachine.Policy
    private let store: JWTKeyStore
    private let group: any EventLoopGroup
    private let clientConfiguration: HTTPClient.Configuration
    private let logger: Logger

    /// The HTTP client's settings for `settings`: checks the URL and reads `caFile`, so that a
    /// mistake stops start-up before any thread starts.
    static func clientConfiguration(for settings: JWKSSettings) throws(ConfigurationError) -> HTTPClient.Configuration {
        if let problem = JWKSURL.problem(with: settings.url) {
            throw ConfigurationError("\(ConfigurationKey.jwksURL.rawValue) \(problem)")
        }
        var tls = TLSConfiguration.makeClientConfiguration()  // the system's trust store
        if let caFile = settings.caFile {
            tls.additionalTrustRoots = [.certificates(try certificates(in: caFile))]
        }
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tls, redirectConfiguration: .disallow,
            timeout: .init(connect: .init(settings.fetchTimeout), read: .init(settings.fetchTimeout)))
        configuration.httpVersion = .http1Only
        // A refused connection is a failed fetch at once: the state machine's backoff retries,
        // not the client's pool, which would keep trying until the connect timeout.
        configuration.connectionPool.retryConnectionEstablishment = false
        return configuration
    }

    init(
        settings: JWKSSettings, clientConfiguration: HTTPClient.Configuration, store: JWTKeyStore,
        group: any EventLoopGroup, logger: Logger
    ) {
        self.clientConfiguration = clientConfiguration
        self.settings = settings
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

    private static func certificates(in path: String) throws(ConfigurationError) -> [NIOSSLCertificate] {
        let key = ConfigurationKey.jwksCAFile.rawValue
        let bytes: [UInt8]
        switch readWholeFile(path) {
        case .success(let b): bytes = b
        case .failure(let error): throw ConfigurationError("\(key): \(error.message)")
        }
        guard let certificates = try? NIOSSLCertificate.fromPEMBytes(bytes), !certificates.isEmpty else {
            throw ConfigurationError("\(key): \(path) holds no PEM certificate")
        }
        return certificates
    }

    func run() async throws {
        let client = HTTPClient(eventLoopGroup: group, configuration: clientConfiguration)
        await cancelWhenGracefulShutdown { await self.refreshUntilCancelled(client) }
        try? await client.shutdown()
    }

    private func refreshUntilCancelled(_ client: HTTPClient) async {
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
                let outcome = await fetch(client)
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

    /// Why a fetch failed: a line for the log, with the HTTP status when there was one.
    struct FetchFailure: Error, Equatable {
        let reason: String
        var status: UInt? = nil
    }

    /// The URL's keys, or why not, within `fetchTimeout` for the whole exchange: the client's
    /// own deadline ends when the response head arrives, and a body may trickle.
    func fetch(_ client: HTTPClient) async -> Result<Fetched, FetchFailure> {
        let timeout = settings.fetchTimeout
        return await withTaskGroup(of: Result<Fetched, FetchFailure>?.self) { group in
            group.addTask { await self.fetchOnce(client) }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? .failure(FetchFailure(reason: "no complete answer within \(timeout.seconds) s"))
        }
    }

    private func fetchOnce(_ client: HTTPClient) async -> Result<Fetched, FetchFailure> {
        var request = HTTPClientRequest(url: JWKSURL.withoutUserInfo(settings.url))
        request.headers.add(name: "accept", value: "application/jwk-set+json, application/json")
        if let credentials = JWKSURL.basicAuthorization(settings.url) {
            request.headers.add(name: "authorization", value: credentials)
        }
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, timeout: .init(settings.fetchTimeout))
        } catch {
            return .failure(FetchFailure(reason: Self.describe(error)))
        }
        guard response.status == .ok else {
            return .failure(FetchFailure(reason: "HTTP status \(response.status.code)", status: response.status.code))
        }
        let body: ByteBuffer
        do {
            body = try await response.body.collect(upTo: settings.maxResponseBytes)
        } catch is NIOTooManyBytesError {
            return .failure(FetchFailure(reason: "response longer than \(settings.maxResponseBytes) bytes"))
        } catch {
            return .failure(FetchFailure(reason: Self.describe(error)))
        }
        let keys: JWTKeySet
        do {
            keys = try JWTKeySet(jwks: Array(buffer: body))
        } catch {
            // Reasons name the member at fault, never key material (`JWTKeyError`).
            return .failure(FetchFailure(reason: "not a usable JWK Set: \(error.reason)"))
        }
        let freshFor = JWKSRefreshStateMachine.freshness(
            cacheControl: response.headers["cache-control"], age: response.headers["age"], policy: policy)
        return .success(Fetched(keys: keys, freshFor: freshFor))
    }

    /// A transport error in one short line. The client's errors do not hold the URL.
    private static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout, .readTimeout, .deadlineExceeded: return "timed out"
            case .redirectLimitReached: return "redirected (redirects are not followed)"
            default: return "\(error)"
            }
        }
        if let error = error as? IOError {
            return "network error: \(String(cString: strerror(error.errnoCode)))"
        }
        let text = "\(error)"
        return text.count > 300 ? String(text.prefix(300)) + "..." : text
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

    private func logFailure(_ failure: FetchFailure, _ state: JWKSRefreshStateMachine.Failure, keysLoaded: Bool) {
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
