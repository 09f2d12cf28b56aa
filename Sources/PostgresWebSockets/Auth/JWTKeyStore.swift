import Synchronization

/// The verifier every handshake uses, and where the handshakes and the `JWKSFetcher` meet.
///
/// It holds an immutable `JWTVerifier` that its one writer, the fetcher, replaces as a whole
/// (`install`); a handshake reads it with `current`, a lock held for one copy (two retains),
/// on any event loop, never waiting on I/O. Without a JWKS URL nothing ever replaces it.
///
/// A handshake that meets a `kid` no key has calls `unknownKeySeen()`: one atomic exchange,
/// and a wake-up of the fetcher only when none is pending, so a flood of unknown kids costs
/// the fetcher one look per wake, and the fetcher decides whether to fetch (see
/// `JWKSRefreshStateMachine`).
final class JWTKeyStore: Sendable {
    struct Current: Sendable {
        let verifier: JWTVerifier
        /// A JWKS URL is configured and no fetch of it has succeeded yet: a token the keys at
        /// hand cannot take may be one the URL's keys would, so it is not refused as invalid.
        let awaitingFetchedKeys: Bool
    }

    /// The keys of `jwt-secret` (maybe none), kept ahead of every fetched set.
    let configuredKeys: JWTKeySet
    let audience: String?
    private let state: Mutex<Current>
    private let unknownKeyPending = Atomic<Bool>(false)
    private let wakeContinuation: AsyncStream<Void>.Continuation
    /// Wakes the fetcher: after an unknown kid, or when its timer fires. Coalesced: it holds
    /// at most one wake-up the fetcher has not taken yet.
    let wakes: AsyncStream<Void>

    /// `fetchesKeys`: a JWKS URL is configured, so handshakes that need a key wait for it.
    init(configuredKeys: JWTKeySet, audience: String?, fetchesKeys: Bool) {
        self.configuredKeys = configuredKeys
        self.audience = audience
        state = Mutex(
            Current(
                verifier: JWTVerifier(keys: configuredKeys, audience: audience), awaitingFetchedKeys: fetchesKeys))
        (wakes, wakeContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// A store that never changes: a fixed verifier, as unit tests build handshakes with.
    convenience init(fixed verifier: JWTVerifier) {
        self.init(configuredKeys: verifier.keys, audience: verifier.audience, fetchesKeys: false)
    }

    var current: Current { state.withLock { $0 } }

    /// The fetcher's keys, after the configured ones: what every later handshake verifies with.
    func install(fetched: JWTKeySet) {
        let verifier = JWTVerifier(keys: configuredKeys.merging(fetched), audience: audience)
        state.withLock { $0 = Current(verifier: verifier, awaitingFetchedKeys: false) }
    }

    /// A token named a `kid` no key has. Never blocks; cheap when repeated.
    func unknownKeySeen() {
        guard !unknownKeyPending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        wakeContinuation.yield()
    }

    /// For the fetcher: whether an unknown kid was seen since it last asked.
    func takeUnknownKeySighting() -> Bool {
        unknownKeyPending.exchange(false, ordering: .acquiringAndReleasing)
    }

    /// For the fetcher's timer.
    func wakeFetcher() {
        wakeContinuation.yield()
    }
}
