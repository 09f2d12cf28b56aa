import BridgeTestSupport

@testable import PostgresWebSockets

/// The JWT verifier end to end: token text in, claims or a refusal out, with a fixed HMAC
/// secret and a fixed JWK Set (RS256, ES256, EdDSA and the secret as an `oct` key).
///
/// The first byte picks how the rest is read: a token as sent (mode 0), or a header and
/// claims (split at the first NUL) that the target signs with the key the header's `alg`
/// names (mode 1), so the fuzzer explores what lies behind a valid signature; or a JWK Set
/// document (mode 2). The second byte picks the clock.
///
/// Properties:
/// - a token that verifies re-verifies identically (claims, expiry), with a fresh verifier too;
/// - it is the one spelling of itself: three canonical unpadded base64url segments, a header
///   object with a known `alg` and no `crit`, claims whose `exp` is after and `nbf` not after
///   the clock;
/// - changing any one of its characters makes it refused;
/// - a verifier that also checks the audience accepts no token the plain one refuses;
/// - the grant of accepted claims names only valid channels;
/// - a refusal's reason is one printable line; a JWK Set's error too.
enum JWTTarget {
    static let target = FuzzTarget(name: "jwt", summary: "JWTVerifier with fixed HMAC and JWKS keys", run: run)

    static let signers: [String: TestSigningKey] = {
        var signers: [String: TestSigningKey] = [:]
        for (kind, pem, kid) in [
            (TestSigningKey.Kind.rs256, FuzzKeys.rsaPEM, "rsa"), (.es256, FuzzKeys.ecPEM, "ec"),
            (.edDSA, FuzzKeys.edPEM, "ed"),
        ] {
            signers[kind.rawValue] = try! TestSigningKey(pem: pem + "\n", kind: kind, kid: kid)
        }
        return signers
    }()

    static let jwks: String = {
        let oct =
            #"{"kty":"oct","kid":"hs","k":""# + Base64.encode(FuzzKeys.hmacSecret, urlSafe: true, padded: false)
            + #""}"#
        let keys = ["RS256", "ES256", "EdDSA"].map { signers[$0]!.publicJWK } + [oct]
        return #"{"keys":["# + keys.joined(separator: ",") + "]}"
    }()

    /// The raw secret (no kid) and the set.
    static let keys: JWTKeySet = {
        let raw = try! JWTKeySet(secret: FuzzKeys.hmacSecret)
        let set = try! JWTKeySet(jwks: Array(jwks.utf8))
        return JWTKeySet(keys: raw.keys + set.keys, skippedKeyCount: set.skippedKeyCount)
    }()
    static let verifier = JWTVerifier(keys: keys)
    static let audienceVerifier = JWTVerifier(keys: keys, audience: "pgws")
    static let clocks: [Double] = [0, 1_700_000_000, 4_000_000_000]

    static func run(_ data: UnsafeRawBufferPointer) {
        var input = FuzzInput(data)
        let mode = input.byte() % 3
        let now = clocks[Int(input.byte()) % clocks.count]
        let token: String
        switch mode {
        case 0:
            token = String(decoding: input.rest(), as: UTF8.self)
        case 1:
            token = sign(header: input.field(), claims: input.rest())
        default:
            return checkKeySet(input.rest())
        }
        check(token, now: now)
    }

    /// A token of `header` and `claims` signed with the key its `alg` names (HS256 if none).
    static func sign(header: [UInt8], claims: [UInt8]) -> String {
        let input =
            Base64.encode(header, urlSafe: true, padded: false) + "."
            + Base64.encode(claims, urlSafe: true, padded: false)
        let alg = (try? JSONParser.parse(header))?["alg"]?.stringValue ?? "HS256"
        let signature: [UInt8]
        if let signer = signers[alg] {
            signature = signer.sign(Array(input.utf8))
        } else {
            signature = (JWTAlgorithm(rawValue: alg) ?? .hs256).sign(key: FuzzKeys.hmacSecret, message: input)
        }
        return input + "." + Base64.encode(signature, urlSafe: true, padded: false)
    }

    static func check(_ token: String, now: Double) {
        let result = verify(verifier, token, now: now)
        let audienceResult = verify(audienceVerifier, token, now: now)
        if case .success = audienceResult {
            expect(isSuccess(result), "accepted with an audience, refused without")
        }
        for case .failure(let error) in [result, audienceResult] {
            expect(
                isPrintableLine(error.reason) && error.reason.utf8.count <= 200, "reason \(error.reason.debugEscaped)")
        }
        guard case .success(let verified) = result else { return }

        let claimsText = verified.claims.serialized
        for again in [verify(verifier, token, now: now), verify(JWTVerifier(keys: keys), token, now: now)] {
            guard case .success(let second) = again else { return expect(false, "accepted once, refused again") }
            expect(second.claims.serialized == claimsText, "claims differ on the second verification")
            expect(second.expiresAt == verified.expiresAt, "expiry differs on the second verification")
        }

        let segments = token.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        expect(segments.count == 3, "accepted a token of \(segments.count) segments")
        for segment in segments {
            let bytes = Base64.decodeURLSafe(segment)
            expect(bytes != nil, "accepted a segment that is not base64url")
            expect(
                Base64.encode(bytes ?? [], urlSafe: true, padded: false).utf8.elementsEqual(segment),
                "accepted a non-canonical segment")
        }
        let header = try? JSONParser.parse(Base64.decodeURLSafe(segments[0]) ?? [])
        expect(header?["alg"]?.stringValue.flatMap(JWSAlgorithm.init(rawValue:)) != nil, "accepted an unknown alg")
        expect(header?["crit"] == nil, "accepted a crit header")
        expect(Self.parsedClaims(segments[1])?.serialized == claimsText, "claims are not the token's")
        if let exp = verified.expiresAt { expect(now < exp, "accepted an expired token") }
        if let nbf = verified.claims["nbf"]?.doubleValue { expect(nbf <= now, "accepted a token before its nbf") }

        // Any one character changed: refused.
        let bytes = Array(token.utf8)
        let position = Int(UInt(bitPattern: claimsText.hashValue) % UInt(bytes.count))
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.".utf8)
        for replacement in [alphabet[(bytes.count) % alphabet.count], UInt8(ascii: "A"), UInt8(ascii: "x")]
        where replacement != bytes[position] {
            var changed = bytes
            changed[position] = replacement
            let text = String(decoding: changed, as: UTF8.self)
            expect(!isSuccess(verify(verifier, text, now: now)), "accepted with byte \(position) changed")
            break
        }

        for requested in [nil, "chat"] as [String?] {
            if let grant = try? Grant.authorize(claims: verified.claims, requestedChannel: requested) {
                expect(grant.channels.allSatisfy { ChannelName.problem(with: $0) == nil }, "granted a bad channel name")
            }
        }
    }

    static func parsedClaims(_ segment: Substring.UTF8View.SubSequence) -> JSONValue? {
        try? JSONParser.parse(Base64.decodeURLSafe(segment) ?? [])
    }

    static func verify(_ verifier: JWTVerifier, _ token: String, now: Double) -> Result<VerifiedToken, TokenError> {
        do throws(TokenError) {
            return .success(try verifier.verify(token[...], now: now))
        } catch {
            return .failure(error)
        }
    }

    static func isSuccess(_ result: Result<VerifiedToken, TokenError>) -> Bool {
        if case .success = result { true } else { false }
    }

    static func checkKeySet(_ document: [UInt8]) {
        do throws(JWTKeyError) {
            let set = try JWTKeySet(jwks: document)
            expect(!set.isEmpty && set.count <= JWTKeySet.maxKeys, "a set of \(set.count) keys")
        } catch {
            expect(isPrintableLine("\(error)"), "JWKS error \("\(error)".debugEscaped)")
        }
        do throws(JWTKeyError) {
            _ = try JWTKeySet(secret: document)
        } catch {
            expect(isPrintableLine("\(error)"), "secret error \("\(error)".debugEscaped)")
        }
    }
}
