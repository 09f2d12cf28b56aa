import Testing

@testable import PostgresWebSockets

private typealias F = JWKFixtures
private typealias V = JWKVectors

/// Every algorithm's PyJWT token, and the JWK of the key that signed it.
private let signed: [(alg: String, token: String, jwk: String)] = [
    ("RS256", V.tokenRS256, F.rsa1()), ("RS384", V.tokenRS384, F.rsa1()), ("RS512", V.tokenRS512, F.rsa1()),
    ("PS256", V.tokenPS256, F.rsa1()), ("PS384", V.tokenPS384, F.rsa1()), ("PS512", V.tokenPS512, F.rsa1()),
    ("ES256", V.tokenES256, F.p256()), ("ES384", V.tokenES384, F.p384()), ("ES512", V.tokenES512, F.p521()),
    ("EdDSA", V.tokenEdDSA, F.ed1()),
    ("HS256", V.tokenHS256, F.oct1()), ("HS384", V.tokenHS384, F.oct1()), ("HS512", V.tokenHS512, F.oct1()),
]
private let algorithms = signed.map(\.alg)

private func token(_ alg: String) -> String { signed.first { $0.alg == alg }!.token }
private func jwk(_ alg: String) -> String { signed.first { $0.alg == alg }!.jwk }

private let everyKey = try! F.verifier(F.everyAlgorithm)
private let claims = #"{"mode":"r"}"#

@Suite("JWTVerifier with JWK keys")
struct JWTVerifierKeyTests {
    // MARK: algorithms

    @Test(
        "every algorithm's token verifies under its key, in a set or alone, with or without kid", arguments: algorithms)
    func accepts(alg: String) throws {
        let expected = JSONValue.object([
            ("mode", .string("r")), ("channels", .array([.string("a"), .string("b")])), ("exp", .number("4102444800")),
        ])
        for verifier in [everyKey, try F.verifier(jwk(alg))] {
            let verified = try verifier.verify(Substring(token(alg)), now: 1_700_000_000)
            #expect(verified.claims == expected)
            #expect(verified.expiresAt == 4_102_444_800)
        }
        // The key without a kid fits the token that names one.
        let withoutKid = try JSONParser.parse(jwk(alg))
        guard case .object(let members) = withoutKid else { return }
        let stripped = F.jwk(members.filter { $0.key != "kid" })
        #expect(F.refusal(token(alg), try F.verifier(stripped)) == nil)
    }

    @Test("tokens without kid verify by trying every key that fits their alg")
    func noKid() throws {
        for token in [V.noKidRS256, V.noKidES256, V.noKidEdDSA, V.noKidHS256] {
            #expect(F.refusal(token, everyKey) == nil)
        }
    }

    @Test("flipping any byte of any algorithm's signature is refused", arguments: algorithms)
    func flippedSignature(alg: String) {
        let original = F.signature(of: token(alg))
        var accepted: [Int] = []
        for index in original.indices {
            var flipped = original
            flipped[index] ^= 0x01
            if F.refusal(F.resigned(token(alg), signature: flipped), everyKey) != "invalid JWT signature" {
                accepted.append(index)
            }
        }
        #expect(accepted == [])
        #expect(F.refusal(F.resigned(token(alg), signature: []), everyKey) == "invalid JWT signature")
        #expect(F.refusal(String(token(alg).dropLast(2)), everyKey) == "invalid JWT signature")
    }

    @Test("changing the signed claims breaks every algorithm's signature", arguments: algorithms)
    func tamperedClaims(alg: String) {
        let parts = token(alg).split(separator: ".").map(String.init)
        let claims = F.base64url(Array(#"{"mode":"rw","channels":["a","b"],"exp":4102444800}"#.utf8))
        #expect(F.refusal(parts[0] + "." + claims + "." + parts[2], everyKey) == "invalid JWT signature")
    }

    @Test("a token is refused by another key of its type under the same kid")
    func wrongKey() throws {
        let others = try F.verifier(
            F.jwks([
                F.rsa2(kid: "rsa-1"), F.p256b(kid: "ec-256"), F.ed2(kid: "ed-1"), F.oct2(kid: "hs-1"),
            ]))
        for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "EdDSA", "HS256", "HS384", "HS512"] {
            #expect(F.refusal(token(alg), others) == "invalid JWT signature", "\(alg)")
        }
        #expect(F.refusal(V.noKidRS256Key2, try F.verifier(F.rsa1())) == "invalid JWT signature")
        #expect(F.refusal(V.noKidES256Key2, try F.verifier(F.p256())) == "invalid JWT signature")
    }

    // MARK: key selection

    @Test("a token's kid picks the keys with that kid only, even when another key would verify")
    func kidPicks() throws {
        let set = try F.verifier(F.jwks([F.rsa2(), F.p256(), F.rsa1()]))
        #expect(F.refusal(V.tokenRS256, set) == nil)
        #expect(F.refusal(V.tokenRS256Key2, set) == nil)
        // rsa1 has no kid and would verify, but the kid names rsa2 (relabelled).
        let relabelled = try F.verifier(F.jwks([F.rsa2(kid: "rsa-1"), F.rsa1(kid: nil)]))
        #expect(F.refusal(V.tokenRS256, relabelled) == "invalid JWT signature")
        // Two keys share the kid: both are tried.
        let shared = try F.verifier(F.jwks([F.rsa2(kid: "rsa-1"), F.rsa1()]))
        #expect(F.refusal(V.tokenRS256, shared) == nil)
    }

    @Test("a kid no key has is refused as unknown key, a distinct error")
    func unknownKid() throws {
        let set = try F.verifier(F.jwks([F.rsa1(), F.rsa2()]))
        #expect(throws: TokenError.unknownKey) { try set.verify(Substring(V.tokenUnknownKid), now: 0) }
        #expect(TokenError.unknownKey.reason == "unknown key")
        #expect(F.refusal(V.tokenES256, set) == "unknown key")
        // Key IDs compare byte for byte: a canonically equivalent spelling is another kid.
        let composed = try F.verifier(F.oct1(kid: "caf\u{E9}"))
        let header = #"{"alg":"HS256","kid":"cafe\#u{301}"}"#
        #expect(F.refusal(F.mintHMAC(header: header, claims: claims, key: F.oct1Bytes), composed) == "unknown key")
        let same = #"{"alg":"HS256","kid":"caf\#u{E9}"}"#
        #expect(F.refusal(F.mintHMAC(header: same, claims: claims, key: F.oct1Bytes), composed) == nil)
    }

    @Test("keys without kid fit any token: an unknown kid falls back to them")
    func keyWithoutKid() throws {
        let set = try F.verifier(F.jwks([F.rsa2(), F.rsa1(kid: nil)]))
        #expect(F.refusal(V.tokenUnknownKid, set) == nil)
        #expect(F.refusal(V.noKidRS256, set) == nil)
        // A raw secret keeps accepting tokens that name a kid, of any JSON type, as before.
        let secret = Array("raw-secret-with-a-kid-in-tokens".utf8)
        let raw = JWTVerifier(secret: secret)
        for kid in [#""a""#, "7", "null", "[]"] {
            let token = F.mintHMAC(header: #"{"alg":"HS256","kid":\#(kid)}"#, claims: claims, key: secret)
            #expect(F.refusal(token, raw) == nil, "\(kid)")
            // Keys that all have a kid: a kid of another type names none of them.
            #expect(F.refusal(token, everyKey) == "unknown key", "\(kid)")
        }
    }

    @Test("a token without kid is checked against every key that fits its alg, and only those")
    func everyFittingKey() throws {
        let set = try F.verifier(F.jwks([F.p256(), F.rsa1(), F.oct1(), F.rsa2(), F.p256b()]))
        #expect(F.refusal(V.noKidRS256, set) == nil)
        #expect(F.refusal(V.noKidRS256Key2, set) == nil)
        #expect(F.refusal(V.noKidES256, set) == nil)
        #expect(F.refusal(V.noKidES256Key2, set) == nil)
        #expect(F.refusal(V.noKidHS256, set) == nil)
        #expect(F.refusal(V.noKidEdDSA, set) == "unsupported JWT algorithm EdDSA")
    }

    // MARK: algorithms and key types

    @Test("a key's alg is the only algorithm it verifies")
    func keyAlg() throws {
        #expect(F.refusal(V.tokenRS256, try F.verifier(F.rsa1(("alg", .string("RS256"))))) == nil)
        #expect(
            F.refusal(V.tokenRS384, try F.verifier(F.rsa1(("alg", .string("RS256")))))
                == "unsupported JWT algorithm RS384")
        #expect(
            F.refusal(V.tokenPS256, try F.verifier(F.rsa1(("alg", .string("RS256")))))
                == "unsupported JWT algorithm PS256")
        #expect(
            F.refusal(V.tokenRS256, try F.verifier(F.rsa1(("alg", .string("PS256")))))
                == "unsupported JWT algorithm RS256")
        #expect(
            F.refusal(V.tokenHS512, try F.verifier(F.oct1(("alg", .string("HS256")))))
                == "unsupported JWT algorithm HS512")
        // Another key takes the algorithm, the named one does not.
        let mixed = try F.verifier(F.jwks([F.rsa1(("alg", .string("RS384"))), F.rsa2(("alg", .string("RS256")))]))
        #expect(F.refusal(V.tokenRS256, mixed) == "JWT algorithm RS256 does not fit the token's key")
        #expect(F.refusal(V.tokenRS384, mixed) == nil)
    }

    @Test("an RSA public key never verifies HS256 signed with its PEM or JWK text (algorithm confusion)")
    func algorithmConfusion() throws {
        let configured = F.rsa1()
        let verifier = try F.verifier(configured)
        let pems = [V.rsa1PEM, V.rsa1PEM + "\n"]
        for kid in [nil, "rsa-1"] {
            let header = kid.map { #"{"alg":"HS256","typ":"JWT","kid":"\#($0)"}"# } ?? #"{"alg":"HS256","typ":"JWT"}"#
            for secret in pems + [configured] {
                let forged = F.mintHMAC(header: header, claims: claims, key: Array(secret.utf8))
                #expect(F.refusal(forged, verifier) == "unsupported JWT algorithm HS256")
                // Next to an HMAC key, the forged token still fails: kid rsa-1 names the RSA key,
                // and without a kid only the real HMAC key is tried.
                let withOct = try F.verifier(F.jwks([configured, F.oct1()]))
                #expect(
                    F.refusal(forged, withOct)
                        == (kid == nil ? "invalid JWT signature" : "JWT algorithm HS256 does not fit the token's key"))
            }
        }
        // The forgeries are correctly signed: the same texts as HMAC keys accept them.
        for pem in pems {
            let forged = F.mintHMAC(header: #"{"alg":"HS256"}"#, claims: claims, key: Array(pem.utf8))
            #expect(F.refusal(forged, JWTVerifier(secret: Array(pem.utf8))) == nil)
        }
        let asOct = try F.verifier(
            F.jwk([("kty", .string("oct")), ("k", .string(F.base64url(Array(configured.utf8))))]))
        #expect(
            F.refusal(F.mintHMAC(header: #"{"alg":"HS256"}"#, claims: claims, key: Array(configured.utf8)), asOct)
                == nil)
    }

    @Test("an HMAC key never verifies an asymmetric token, whatever its bytes")
    func secretNeverVerifiesPublicKeyAlgorithms() throws {
        for alg in algorithms where !alg.hasPrefix("HS") {
            #expect(F.refusal(token(alg), try F.verifier(F.oct1(kid: nil))) == "unsupported JWT algorithm \(alg)")
        }
        // A raw secret: as before, public-key algorithms are unsupported.
        #expect(F.refusal(V.tokenRS256, JWTVerifier(secret: Array("x".utf8))) == "unsupported JWT algorithm RS256")
    }

    @Test("each EC key verifies its own curve's algorithm only")
    func curves() throws {
        let p256 = try F.verifier(F.p256(kid: nil))
        #expect(F.refusal(V.tokenES256, p256) == nil)
        #expect(F.refusal(V.tokenES384, p256) == "unsupported JWT algorithm ES384")
        #expect(F.refusal(V.tokenES512, p256) == "unsupported JWT algorithm ES512")
        #expect(F.refusal(V.tokenES256, try F.verifier(F.p384(kid: nil))) == "unsupported JWT algorithm ES256")
        #expect(F.refusal(V.tokenES256, try F.verifier(F.p521(kid: nil))) == "unsupported JWT algorithm ES256")
        // An ES384 header on the P-256 signature: the P-384 key wants 96 bytes.
        let parts = V.rawES256.split(separator: ".").map(String.init)
        let es384Header = F.base64url(Array(#"{"alg":"ES384","typ":"JWT"}"#.utf8))
        let relabelled = es384Header + "." + parts[1] + "." + parts[2]
        #expect(
            F.refusal(relabelled, try F.verifier(F.jwks([F.p256(kid: nil), F.p384(kid: nil)])))
                == "invalid JWT signature")
    }

    @Test("ES signatures must be raw r||s of exactly the curve's size; DER and other lengths are refused")
    func ecdsaSignatureForm() throws {
        let p256 = try F.verifier(F.p256(kid: nil))
        #expect(F.refusal(V.rawES256, p256) == nil)
        #expect(F.refusal(V.derES256, p256) == "invalid JWT signature")
        #expect(F.refusal(V.longES256, p256) == "invalid JWT signature")
        let raw = F.signature(of: V.rawES256)
        for signature in [Array(raw.dropLast()), raw + [0], [0] + raw, Array(raw.prefix(32)), raw + raw] {
            #expect(F.refusal(F.resigned(V.rawES256, signature: signature), p256) == "invalid JWT signature")
        }
        let es512 = F.signature(of: V.tokenES512)
        #expect(es512.count == 132)
        for signature in [Array(es512.dropLast()), es512 + [0], Array(es512.dropFirst())] {
            #expect(F.refusal(F.resigned(V.tokenES512, signature: signature), everyKey) == "invalid JWT signature")
        }
        // (r, s) with s replaced by n - s is the other valid ECDSA signature; JWS does not
        // forbid it, and libcrypto accepts it: not a forgery, the signer's own signature.
    }

    @Test("PSS is JWA's: MGF1 over the same hash, salt as long as the hash")
    func pssParameters() throws {
        let rsa = try F.verifier(F.rsa1(kid: nil))
        #expect(F.refusal(V.tokenPS256, rsa) == nil)
        #expect(F.refusal(V.maxSaltPS256, rsa) == "invalid JWT signature")
        #expect(F.refusal(V.sha1MGFPS256, rsa) == "invalid JWT signature")
        // PKCS #1 v1.5 and PSS signatures do not stand in for each other.
        let rs = V.tokenRS256.split(separator: ".").map(String.init)
        let ps = V.tokenPS256.split(separator: ".").map(String.init)
        #expect(F.refusal(ps[0] + "." + rs[1] + "." + rs[2], rsa) == "invalid JWT signature")
        #expect(F.refusal(rs[0] + "." + ps[1] + "." + ps[2], rsa) == "invalid JWT signature")
    }

    @Test("alg none and unknown algorithms are refused whatever the keys")
    func noneAndUnknown() {
        for alg in ["none", "None", "ES256K", "RS1", "HS1024", "Ed25519", "EDDSA", "ps256"] {
            let header = F.base64url(Array(#"{"alg":"\#(alg)","kid":"rsa-1"}"#.utf8))
            let unsigned = header + "." + F.base64url(Array(claims.utf8)) + "."
            #expect(F.refusal(unsigned, everyKey) == "unsupported JWT algorithm \(alg)")
            #expect(
                F.refusal(unsigned + String(V.tokenRS256.split(separator: ".")[2]), everyKey)
                    == "unsupported JWT algorithm \(alg)")
        }
    }

    @Test("a crit header is refused under JWK keys too")
    func crit() {
        let header = #"{"alg":"HS256","kid":"hs-1","crit":["exp"]}"#
        #expect(
            F.refusal(F.mintHMAC(header: header, claims: claims, key: F.oct1Bytes), everyKey)
                == "unsupported JWT crit header")
    }

    @Test("a verifier without keys refuses every token")
    func noKeys() throws {
        #expect(F.refusal(V.tokenHS256, JWTVerifier(keys: .empty)) == "no usable JWT key configured")
        #expect(
            F.refusal(V.tokenRS256, JWTVerifier(secret: Array(#"{"kty":"RSA"}"#.utf8)))
                == "no usable JWT key configured")
    }

    // MARK: audience

    @Test(
        "with an audience set, aud must name it",
        arguments: [
            (#""pgws""#, nil), (#"["other","pgws"]"#, nil), (#"["pgws"]"#, nil),
            (nil, "JWT audience not accepted"), (#""other""#, "JWT audience not accepted"),
            (#""PGWS""#, "JWT audience not accepted"), (#""pgws ""#, "JWT audience not accepted"),
            ("[]", "JWT audience not accepted"), (#"["a","b"]"#, "JWT audience not accepted"),
            ("5", "JWT aud claim must be a string or an array of strings"),
            ("null", "JWT aud claim must be a string or an array of strings"),
            (#"{"pgws":true}"#, "JWT aud claim must be a string or an array of strings"),
            (#"["pgws",5]"#, "JWT aud claim must be a string or an array of strings"),
            (#"[["pgws"]]"#, "JWT aud claim must be a string or an array of strings"),
        ] as [(String?, String?)])
    func audience(aud: String?, reason: String?) throws {
        let body = aud.map { #"{"mode":"r","aud":\#($0)}"# } ?? claims
        let token = F.mintHMAC(header: #"{"alg":"HS256"}"#, claims: body, key: F.oct1Bytes)
        #expect(F.refusal(token, try F.verifier(F.oct1(), audience: "pgws")) == reason)
        // Without an audience set, aud is not looked at, as before.
        #expect(F.refusal(token, try F.verifier(F.oct1())) == nil)
    }

    @Test("the audience is checked only after the signature")
    func audienceAfterSignature() throws {
        let token = F.mintHMAC(header: #"{"alg":"HS256"}"#, claims: #"{"aud":"pgws"}"#, key: Array("other-key".utf8))
        #expect(F.refusal(token, try F.verifier(F.oct1(), audience: "pgws")) == "invalid JWT signature")
        #expect(F.refusal(V.tokenRS256, try F.verifier(F.rsa1(), audience: "pgws")) == "JWT audience not accepted")
    }

    // MARK: concurrency

    @Test("one verifier verifies every algorithm from many tasks at once")
    func concurrentVerification() async {
        let verifier = everyKey
        let failures = await withTaskGroup(of: Int.self) { group in
            for task in 0..<8 {
                group.addTask {
                    var failed = 0
                    for round in 0..<40 {
                        let (_, token, _) = signed[(task + round) % signed.count]
                        if (try? verifier.verify(Substring(token), now: 1_700_000_000)) == nil { failed += 1 }
                        let bad = F.resigned(token, signature: F.signature(of: token).map { $0 ^ 0x80 })
                        if (try? verifier.verify(Substring(bad), now: 1_700_000_000)) != nil { failed += 1 }
                    }
                    return failed
                }
            }
            return await group.reduce(0, +)
        }
        #expect(failures == 0)
    }
}

@Suite("ECDSASignature")
struct ECDSASignatureTests {
    @Test("raw r||s becomes minimal DER: leading zeros dropped, a zero kept before a set top bit")
    func der() {
        let r: [UInt8] = [0x00, 0x00, 0x7F] + [UInt8](repeating: 0x11, count: 29)
        let s: [UInt8] = [0x80] + [UInt8](repeating: 0x22, count: 31)
        let der = ECDSASignature.der(fromRaw: r + s)
        #expect(der == [0x30, 0x43, 0x02, 0x1E] + r.dropFirst(2) + [0x02, 0x21, 0x00] + s)
        let zero = ECDSASignature.der(fromRaw: [UInt8](repeating: 0, count: 64))
        #expect(zero == [0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00])
    }

    @Test("P-521 signatures take a long-form SEQUENCE length")
    func longLength() {
        let half: [UInt8] = [0x01] + [UInt8](repeating: 0xFF, count: 65)
        let der = ECDSASignature.der(fromRaw: half + half)
        #expect(Array(der.prefix(5)) == [0x30, 0x81, 0x88, 0x02, 0x42])
        #expect(der.count == 3 + 2 * (2 + 66))
    }
}
