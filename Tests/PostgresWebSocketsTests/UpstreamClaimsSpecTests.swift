import Testing

@testable import PostgresWebSockets

/// postgres-websockets' own claims specification (test/ClaimsSpec.hs of 0.12), case by case,
/// with its secret and tokens, in this server's terms: where upstream answers `Left reason`
/// this server refuses (401 for the token, 403 for the grant), where it answers `Right
/// (channels, mode, claims)` it grants the same.
private let upstreamSecret = Array("reallyreallyreallyreallyverysafe".utf8)
private let jwkSecret = #"{"kty":"oct","k":"cmVhbGx5cmVhbGx5cmVhbGx5cmVhbGx5dmVyeXNhZmU","alg":"HS256"}"#
private let jwksSecret = #"{"keys":[{"kty":"oct","k":"cmVhbGx5cmVhbGx5cmVhbGx5cmVhbGx5dmVyeXNhZmU","alg":"HS256"}]}"#
/// 2026-11-30: the spec's tokens carry no `exp` but the first, whose `exp` is 1.
private let now = 1_796_000_000.0

private let expiredToken =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoiciIsImNoYW5uZWwiOiJ0ZXN0IiwiZXhwIjoxfQ.4rDYiMZFR2WHB7Eq4HMdvDP_BQZVtHIfyJgy0NshbHY"
private let modeOnly =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoiciJ9.jL5SsRFegNUlbBm8_okhHSujqLcKKZdDglfdqNl1_rY"
private let oldStyleChannel =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoiciIsImNoYW5uZWwiOiJ0ZXN0In0.1d4s-at2kWj8OSabHZHTbNh1dENF7NWy_r0ED3Rwf58"
private let twoChannels =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoiciIsImNoYW5uZWxzIjpbInRlc3QiLCJhbm90aGVyIHRlc3QiXX0.b9N8J8tPOPIxxFj5WJ7sWrmcL8ib63i8eirsRZTM9N0"
private let testAndTest2 =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoiciIsImNoYW5uZWxzIjpbInRlc3QiLCJ0ZXN0MiJdfQ.MumdJ5FpFX4Z6SJD3qsygVF0r9vqxfqhj5J30O32N0k"
private let noMode =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJjaGFubmVscyI6WyJ0ZXN0IiwidGVzdDIiXX0.akC1PEYk2DEZtLP2XjC6qXOGZJejmPx49qv-VeEtQYQ"

private enum Outcome: Equatable {
    case granted(channels: [String], mode: Grant.Mode)
    case unauthorized(String)
    case forbidden(String)
}

private func validate(_ token: String, channel: String?, secret: [UInt8] = upstreamSecret) throws -> Outcome {
    let verifier = JWTVerifier(keys: try JWTKeySet(secret: secret))
    let verified: VerifiedToken
    do {
        verified = try verifier.verify(Substring(token), now: now)
    } catch {
        return .unauthorized(error.reason)
    }
    do {
        let grant = try Grant.authorize(claims: verified.claims, requestedChannel: channel)
        return .granted(channels: grant.channels, mode: grant.mode)
    } catch {
        return .forbidden(error.reason)
    }
}

@Suite("postgres-websockets ClaimsSpec")
struct UpstreamClaimsSpecTests {
    @Test("should invalidate an expired token")
    func expired() throws {
        #expect(try validate(expiredToken, channel: nil) == .unauthorized("JWT expired"))
    }

    @Test("request any channel from a token that does not have channels or channel claims should succeed")
    func anyChannel() throws {
        #expect(try validate(modeOnly, channel: "test") == .granted(channels: ["test"], mode: .read))
    }

    @Test("requesting a channel that is set by an old style channel claim should work")
    func oldStyle() throws {
        #expect(try validate(oldStyleChannel, channel: "test") == .granted(channels: ["test"], mode: .read))
    }

    @Test("no requesting channel should return all channels in the token")
    func allChannels() throws {
        #expect(try validate(twoChannels, channel: nil) == .granted(channels: ["test", "another test"], mode: .read))
    }

    @Test("requesting a channel from the channels claim should return only the requested channel")
    func requestedFromChannels() throws {
        #expect(try validate(testAndTest2, channel: "test") == .granted(channels: ["test"], mode: .read))
    }

    @Test("requesting a channel not from the channels claim should error")
    func notAllowed() throws {
        #expect(try validate(testAndTest2, channel: "notAllowed") == .forbidden("channel not allowed by JWT"))
    }

    @Test("requesting a channel with no mode fails")
    func missingMode() throws {
        #expect(try validate(noMode, channel: "test") == .forbidden("JWT has no mode claim"))
    }

    @Test("should validate a token using a JWK secret")
    func jwk() throws {
        #expect(
            try validate(oldStyleChannel, channel: "test", secret: Array(jwkSecret.utf8))
                == .granted(channels: ["test"], mode: .read))
    }

    @Test("should validate a token using a JWKS secret")
    func jwks() throws {
        #expect(
            try validate(oldStyleChannel, channel: "test", secret: Array(jwksSecret.utf8))
                == .granted(channels: ["test"], mode: .read))
    }

    /// Upstream's wrong key is 30 bytes, which this server refuses to load as an HMAC key at
    /// all (a start-up error); a wrong key of a usable length refuses the token.
    @Test("should reject a token with wrong key in JWKS")
    func wrongKey() throws {
        let upstreamWrong = #"{"keys":[{"kty":"oct","k":"d3JvbmdrZXl3cm9uZ2tleXdyb25na2V5d3Jvbmdr","alg":"HS256"}]}"#
        #expect(throws: JWTKeyError.self) { try JWTKeySet(secret: Array(upstreamWrong.utf8)) }
        let wrong =
            #"{"keys":[{"kty":"oct","k":"\#(Base64.encode(Array("wrongkeywrongkeywrongkeywrongkey".utf8), urlSafe: true, padded: false))","alg":"HS256"}]}"#
        #expect(
            try validate(oldStyleChannel, channel: "test", secret: Array(wrong.utf8))
                == .unauthorized("invalid JWT signature"))
    }
}
