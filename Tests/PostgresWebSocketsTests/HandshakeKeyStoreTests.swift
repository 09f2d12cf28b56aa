import NIOHTTP1
import Testing

@testable import PostgresWebSockets

private typealias V = JWKVectors
private typealias F = JWKFixtures

private func head(_ token: String) -> RequestHead {
    let text =
        "GET /\(token) HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    return try! Array(text.utf8).withUnsafeBytes { try RequestHead.parse($0) }
}

/// nil when upgraded.
private func refusal(_ token: String, _ store: JWTKeyStore) -> Refusal? {
    let handshake = Handshake(keys: store, allowedOrigins: nil)
    if case .failure(let refusal) = handshake.authorize(head(token), now: 1_700_000_000) { return refusal }
    return nil
}

private func keySet(_ keys: String...) throws -> JWTKeySet {
    try JWTKeySet(jwks: Array(F.jwks(keys).utf8))
}

private let rawSecret = Array("a-test-secret-long-enough-for-hs256-in-every-library".utf8)

@Suite("Handshake with a key store: keys not loaded yet, unknown kids, installed keys")
struct HandshakeKeyStoreTests {
    @Test("only a JWKS URL, nothing fetched yet: a handshake that needs a key gets 503, not 401")
    func awaitingKeys() {
        let store = JWTKeyStore(configuredKeys: .empty, audience: nil, fetchesKeys: true)
        let answer = refusal(V.tokenRS256, store)
        #expect(answer?.code == .keysUnavailable)
        #expect(answer?.status == .serviceUnavailable)
        #expect(refusal(V.noKidRS256, store)?.status == .serviceUnavailable, "with or without a kid")
        #expect(refusal("not.a.token", store)?.status == .unauthorized, "a malformed token is refused as ever")
    }

    @Test("once fetched keys are installed, their tokens pass and a kid no key has gets 401 unknown key")
    func installed() throws {
        let store = JWTKeyStore(configuredKeys: .empty, audience: nil, fetchesKeys: true)
        store.install(fetched: try keySet(F.rsa1()))
        #expect(refusal(V.tokenRS256, store) == nil)
        #expect(!store.takeUnknownKeySighting())
        let unknown = refusal(V.tokenRS256Key2, store)
        #expect(unknown?.status == .unauthorized)
        #expect(unknown?.reason == "unknown key")
        #expect(store.takeUnknownKeySighting(), "the store heard of the unknown kid")
        #expect(!store.takeUnknownKeySighting(), "once")
        store.install(fetched: try keySet(F.rsa1(), F.rsa2()))
        #expect(refusal(V.tokenRS256Key2, store) == nil, "after the refresh the new kid passes")
    }

    @Test("a configured secret works while the URL has not answered; tokens for other keys get 503")
    func secretMeanwhile() throws {
        let configured = try JWTKeySet(secret: Array(F.jwks([F.p256()]).utf8))
        let store = JWTKeyStore(configuredKeys: configured, audience: nil, fetchesKeys: true)
        #expect(refusal(V.tokenES256, store) == nil, "the configured key verifies its tokens")
        #expect(refusal(V.tokenRS256, store)?.status == .serviceUnavailable, "rsa-1 may come from the URL")
        store.install(fetched: try keySet(F.rsa1()))
        #expect(refusal(V.tokenES256, store) == nil, "the configured keys stay next to fetched ones")
        #expect(refusal(V.tokenRS256, store) == nil)
    }

    @Test("a raw secret stands in for unknown kids, and a refusal then still reports the unknown kid")
    func rawSecretStandsIn() throws {
        let store = JWTKeyStore(configuredKeys: try JWTKeySet(secret: rawSecret), audience: nil, fetchesKeys: true)
        store.install(fetched: try keySet(F.rsa1()))
        let answer = refusal(V.tokenRS256Key2, store)
        #expect(answer?.status == .unauthorized)
        #expect(answer?.reason == "JWT algorithm RS256 does not fit the token's key", "the reason a raw secret gives")
        #expect(store.takeUnknownKeySighting(), "but the fetcher is told: rsa-2 may be new at the URL")
    }

    @Test("a bad signature under a known kid does not ask for keys")
    func noSightingWithoutUnknownKid() throws {
        let store = JWTKeyStore(configuredKeys: .empty, audience: nil, fetchesKeys: true)
        store.install(fetched: try keySet(F.rsa1(), F.rsa2()))
        let tampered = String(V.tokenRS256.dropLast(4)) + "AAAA"
        #expect(refusal(tampered, store)?.reason == "invalid JWT signature")
        #expect(!store.takeUnknownKeySighting())
    }

    @Test("without a JWKS URL, a missing key is 401 as before and the store never wakes anyone")
    func fixedKeys() {
        let store = JWTKeyStore(fixed: JWTVerifier(keys: .empty))
        #expect(refusal(V.tokenRS256, store)?.status == .unauthorized)
        #expect(refusal(V.tokenRS256, store)?.reason == "no usable JWT key configured")
    }

    @Test("the audience applies to fetched keys too")
    func audience() throws {
        let store = JWTKeyStore(configuredKeys: .empty, audience: "pgws", fetchesKeys: true)
        store.install(fetched: try keySet(F.rsa1()))
        #expect(refusal(V.tokenRS256, store)?.reason == "JWT audience not accepted")
    }

    @Test("unknown kids wake the fetcher once until it looks")
    func coalescedWakes() async {
        let store = JWTKeyStore(configuredKeys: .empty, audience: nil, fetchesKeys: true)
        for _ in 0..<1000 { store.unknownKeySeen() }
        var wakes = store.wakes.makeAsyncIterator()
        #expect(await wakes.next() != nil)
        #expect(store.takeUnknownKeySighting())
        store.unknownKeySeen()
        #expect(await wakes.next() != nil, "a sighting after the look wakes it again")
    }
}
