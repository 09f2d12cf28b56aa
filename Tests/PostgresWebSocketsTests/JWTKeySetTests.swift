import Logging
import Testing

@testable import PostgresWebSockets

private typealias F = JWKFixtures
private typealias V = JWKVectors

/// The decoded bytes of a base64url vector, re-encoded after `change`.
private func altered(_ member: String, _ change: (inout [UInt8]) -> Void) -> String {
    var bytes = Base64.decode(member)!
    change(&bytes)
    return F.base64url(bytes)
}

private func jwk(_ members: [(String, JSONValue)]) -> String {
    F.jwk(members.map { (key: $0.0, value: $0.1) })
}

/// JWK texts with the given members; a nil member is left out.
private func members(_ kty: String, _ pairs: [(String, String?)], _ extra: [(String, JSONValue)]) -> String {
    jwk([("kty", .string(kty))] + pairs.compactMap { pair in pair.1.map { (pair.0, .string($0)) } } + extra)
}

private func rsa(n: String? = V.rsa1N, e: String? = "AQAB", _ extra: (String, JSONValue)...) -> String {
    members("RSA", [("n", n), ("e", e)], extra)
}

private func ec(crv: String? = "P-256", x: String? = V.p256X, y: String? = V.p256Y, _ extra: (String, JSONValue)...)
    -> String
{
    members("EC", [("crv", crv), ("x", x), ("y", y)], extra)
}

private func okp(crv: String? = "Ed25519", x: String? = V.ed1X, _ extra: (String, JSONValue)...) -> String {
    members("OKP", [("crv", crv), ("x", x)], extra)
}

private func oct(k: String? = V.oct1K, _ extra: (String, JSONValue)...) -> String {
    members("oct", [("k", k)], extra)
}

private func bytes(_ count: Int, _ value: UInt8) -> String {
    F.base64url([UInt8](repeating: value, count: count))
}

/// Every base64url value of the vectors: no refusal reason may contain any of them.
private let keyMaterial = [
    V.rsa1N, V.rsa2N, V.rsaSmallN, V.p256X, V.p256Y, V.p256bX, V.p256bY, V.p384X, V.p384Y, V.p521X, V.p521Y, V.ed1X,
    V.ed2X, V.oct1K, V.oct2K,
]

@Suite("JWTKeySet")
struct JWTKeySetTests {
    // MARK: recognizing the secret

    @Test("a raw secret, and JSON that is no JWK, stays one HMAC key used byte for byte")
    func rawSecrets() throws {
        for text in [
            "auwhfdnskjhewfi34uwehdlaehsfkuaeiskjnfduierhfsiweskjcnzeiluwhskdewishdnpwe", "", " ", "{", "{not json",
            #"{"a":1}"#, #" {"k":"c2VjcmV0"} "#, "[1,2]", #""kty""#, "42", #"{"key":[]}"#,
        ] {
            let keys = try F.keySet(text)
            #expect(keys.count == 1, "\(text)")
            let token = F.mintHMAC(header: #"{"alg":"HS512"}"#, claims: "{}", key: Array(text.utf8), algorithm: .hs512)
            #expect(F.refusal(token, JWTVerifier(keys: keys)) == nil, "\(text)")
            #expect(F.refusal(token, JWTVerifier(secret: Array(text.utf8))) == nil, "\(text)")
        }
    }

    @Test("a JSON object with kty is one JWK, one with keys a JWK Set, whitespace around allowed")
    func recognized() throws {
        #expect(try F.keySet(F.rsa1()).count == 1)
        #expect(try F.keySet("\n  " + F.ed1() + "\n").count == 1)
        #expect(try F.keySet(F.everyAlgorithm).count == 6)
        #expect(try F.keySet(#"{"keys":[\#(F.p256())],"other":true}"#).count == 1)
    }

    @Test("text meant as a JWK but not JSON is refused, never an HMAC secret")
    func brokenJSON() {
        let truncated = String(F.rsa1().dropLast())
        #expect(F.loadError(truncated)?.hasPrefix("JWK text is not valid JSON: ") == true)
        #expect(F.loadError(#"{"keys":[\#(F.rsa1())],}"#)?.hasPrefix("JWK text is not valid JSON: ") == true)
        #expect(F.loadError(#"{"kty":"RSA","kty":"oct"}"#)?.hasPrefix("JWK text is not valid JSON: ") == true)
        #expect(
            F.refusal(
                F.mintHMAC(header: #"{"alg":"HS256"}"#, claims: "{}", key: Array(truncated.utf8)),
                JWTVerifier(secret: Array(truncated.utf8))) == "no usable JWT key configured")
    }

    @Test("documents are bounded: 1 MiB of text and 100 keys")
    func limits() throws {
        let padding = String(repeating: " ", count: JWTKeySet.maxDocumentBytes)
        #expect(F.loadError(F.ed1() + padding) == "JWK text is longer than 1048576 bytes")
        #expect(throws: JWTKeyError("JWKS is longer than 1048576 bytes")) {
            try JWTKeySet(jwks: Array((F.jwks([F.ed1()]) + padding).utf8))
        }
        let document = F.jwks([F.ed1()])
        let fitting = document + padding.dropFirst(document.utf8.count)
        #expect(fitting.utf8.count == JWTKeySet.maxDocumentBytes)
        #expect(try JWTKeySet(jwks: Array(fitting.utf8)).count == 1)
        #expect(try F.keySet(fitting).count == 1)
        // A raw secret longer than the bound that is not JSON is still a raw secret.
        #expect(try F.keySet("x" + padding).count == 1)
        let hundred = F.jwks(Array(repeating: F.ed1(), count: 100))
        #expect(try F.keySet(hundred).count == 100)
        let tooMany = F.jwks(Array(repeating: F.ed1(), count: 101))
        #expect(F.loadError(tooMany) == "JWKS has more than 100 keys")
    }

    @Test("init(jwks:) takes a JWK Set document only")
    func jwksDocument() throws {
        #expect(try JWTKeySet(jwks: Array(F.everyAlgorithm.utf8)).count == 6)
        for (text, reason) in [
            (F.rsa1(), "JWKS is not an object with a keys member"),
            ("[]", "JWKS is not an object with a keys member"),
            (#"{"keys":{}}"#, "JWKS keys is not an array"),
        ] {
            #expect(throws: JWTKeyError(reason)) { try JWTKeySet(jwks: Array(text.utf8)) }
        }
        #expect(throws: JWTKeyError.self) { try JWTKeySet(jwks: Array("not json".utf8)) }
    }

    // MARK: JWK errors

    @Test(
        "each broken JWK is refused with its one-line reason",
        arguments: [
            (jwk([("kty", .number("1"))]), "JWK kty is not a string"),
            (jwk([("kty", .string("RSA"))]) + " x", "JWK text is not valid JSON: trailing characters at byte 14"),
            (jwk([("kty", .string("PGP"))]), #"unsupported JWK kty "PGP""#),
            (rsa(("kid", .number("7"))), "JWK kid is not a string"),
            (rsa(("alg", .null)), "JWK alg is not a string"),
            (rsa(("use", .array([]))), "JWK use is not a string"),
            (rsa(("use", .string("enc"))), #"JWK use is "enc", not "sig""#),
            (rsa(("key_ops", .string("verify"))), "JWK key_ops is not an array of strings"),
            (rsa(("key_ops", .array([.string("verify"), .null]))), "JWK key_ops is not an array of strings"),
            (rsa(("key_ops", .array([.string("sign")]))), #"JWK key_ops does not include "verify""#),
            (rsa(("alg", .string("RSA-OAEP"))), #"unsupported JWK alg "RSA-OAEP""#),
            (rsa(("alg", .string("none"))), #"unsupported JWK alg "none""#),
            (rsa(("alg", .string("ES256"))), "JWK alg ES256 does not fit its RSA key"),
            (rsa(("alg", .string("HS256"))), "JWK alg HS256 does not fit its RSA key"),
            (rsa(("d", .string("AQAB"))), "RSA JWK holds private key members; configure the public key only"),
            (rsa(("qi", .string("AQAB"))), "RSA JWK holds private key members; configure the public key only"),
            (rsa(n: nil), "RSA JWK has no n"),
            (rsa(e: nil), "RSA JWK has no e"),
            (rsa(n: nil, ("n", .number("5"))), "RSA JWK n is not a string"),
            (rsa(n: V.rsa1N + "="), "RSA JWK n is not base64url"),
            (rsa(n: "+" + V.rsa1N.dropFirst()), "RSA JWK n is not base64url"),
            (rsa(n: V.rsaSmallN), "RSA JWK n is shorter than 2048 bits"),
            (rsa(n: altered(V.rsa1N) { $0[0] = 0x7F }), "RSA JWK n is shorter than 2048 bits"),
            (rsa(n: bytes(2049, 0xFF)), "RSA JWK n is longer than 16384 bits"),
            (rsa(n: altered(V.rsa1N) { $0[$0.count - 1] &= 0xFE }), "RSA JWK n is even"),
            (rsa(e: "AQ"), "RSA JWK e is not an odd number from 3 to 2^64-1"),
            (rsa(e: "AAE"), "RSA JWK e is not an odd number from 3 to 2^64-1"),
            (rsa(e: "AQAA"), "RSA JWK e is not an odd number from 3 to 2^64-1"),
            (rsa(e: ""), "RSA JWK e is not an odd number from 3 to 2^64-1"),
            (rsa(e: "AQEBAQEBAQEB"), "RSA JWK e is not an odd number from 3 to 2^64-1"),
            (ec(crv: nil), "EC JWK has no crv"),
            (ec(crv: "secp256k1"), #"unsupported EC JWK crv "secp256k1""#),
            (ec(("d", .string(V.p256X))), "EC JWK holds private key members; configure the public key only"),
            (ec(y: nil), "EC JWK has no y"),
            (ec(x: V.p384X), "EC JWK x is not 32 bytes, as P-256 needs"),
            (ec(crv: "P-384", x: V.p384X), "EC JWK y is not 48 bytes, as P-384 needs"),
            (
                ec(crv: "P-521", x: altered(V.p521X) { $0.removeFirst() }, y: V.p521Y),
                "EC JWK x is not 66 bytes, as P-521 needs"
            ),
            (ec(y: V.p256bY), "EC JWK point is not on the curve P-256"),
            (ec(y: altered(V.p256Y) { $0[31] ^= 1 }), "EC JWK point is not on the curve P-256"),
            (
                ec(crv: "P-521", x: V.p521X, y: altered(V.p521Y) { $0[65] ^= 1 }),
                "EC JWK point is not on the curve P-521"
            ),
            (ec(x: bytes(32, 0), y: bytes(32, 0)), "EC JWK point is not on the curve P-256"),
            (ec(("alg", .string("ES384"))), "JWK alg ES384 does not fit its EC P-256 key"),
            (ec(("alg", .string("EdDSA"))), "JWK alg EdDSA does not fit its EC P-256 key"),
            (okp(crv: nil), "OKP JWK has no crv"),
            (okp(crv: "X25519"), #"unsupported OKP JWK crv "X25519""#),
            (okp(crv: "Ed448"), #"unsupported OKP JWK crv "Ed448""#),
            (okp(("d", .string(V.ed2X))), "OKP JWK holds private key members; configure the public key only"),
            (okp(x: nil), "OKP JWK has no x"),
            (okp(x: V.p384X), "OKP JWK x is not 32 bytes, as Ed25519 needs"),
            (okp(("alg", .string("ES256"))), "JWK alg ES256 does not fit its Ed25519 key"),
            (oct(k: nil), "oct JWK has no k"),
            (oct(k: "c2VjcmV0"), "oct JWK k is shorter than 32 bytes"),
            (oct(k: String(V.oct1K.prefix(64)), ("alg", .string("HS512"))), "oct JWK k is shorter than 64 bytes"),
            (oct(("alg", .string("RS256"))), "JWK alg RS256 does not fit its oct key"),
        ])
    func jwkErrors(text: String, reason: String) {
        #expect(F.loadError(text) == reason)
        guard !reason.hasPrefix("JWK text") else { return }
        // The same key in a set: named by its index, or left out when it is for something else.
        let forSomethingElse =
            reason.hasPrefix("unsupported") || reason.hasSuffix(#"not "sig""#) || reason.contains("does not include")
        #expect(F.loadError(F.jwks([F.ed1(), text])) == (forSomethingElse ? nil : "JWKS key 1: " + reason))
    }

    @Test("refusals never show key material")
    func reasonsHoldNoKeyMaterial() {
        let texts = [
            rsa(("d", .string(V.oct1K))), rsa(n: V.rsaSmallN), ec(y: V.p256bY), oct(k: String(V.oct1K.prefix(20))),
            oct(k: V.oct1K + "!"), String(F.oct1().dropLast()), String(F.rsa1().dropLast(3)),
        ]
        for text in texts {
            let reason = F.loadError(text) ?? ""
            #expect(!reason.isEmpty)
            #expect(!reason.contains("\n"))
            for material in keyMaterial { #expect(!reason.contains(material.prefix(8)), "\(reason)") }
        }
    }

    @Test("names from the key are shortened and stripped of control characters")
    func printableNames() {
        #expect(F.loadError(jwk([("kty", .string("A\nB C\u{7F}"))])) == #"unsupported JWK kty "A?B?C?""#)
        #expect(
            F.loadError(jwk([("kty", .string(String(repeating: "K", count: 40)))]))
                == "unsupported JWK kty \"" + String(repeating: "K", count: 32) + "...\"")
    }

    // MARK: JWK Sets

    @Test("a JWKS leaves out keys for something else, and counts them")
    func skipped() throws {
        let keys = try F.keySet(
            F.jwks([
                F.rsa2(kid: "enc", ("use", .string("enc"))), jwk([("kty", .string("PGP"))]), okp(crv: "X25519"),
                rsa(("alg", .string("RSA-OAEP-256"))), F.rsa1(("use", .string("sig"))),
                F.ed1(("key_ops", .array([.string("verify"), .string("sign")]))),
                F.p256(("key_ops", .array([.string("sign")]))),
            ]))
        #expect(keys.count == 2)
        #expect(keys.skippedKeyCount == 5)
    }

    @Test("a JWKS without a usable key is refused, saying why the first key was left out")
    func noUsableKey() {
        #expect(F.loadError(#"{"keys":[]}"#) == "JWKS has no key for verifying signatures")
        #expect(
            F.loadError(F.jwks([F.rsa1(("use", .string("enc"))), F.ed1(("alg", .string("ES512K")))]))
                == #"JWKS has no key for verifying signatures (key 0: JWK use is "enc", not "sig")"#)
        #expect(F.loadError(#"{"keys":{}}"#) == "JWKS keys is not an array")
        #expect(F.loadError(#"{"keys":null}"#) == "JWKS keys is not an array")
        #expect(F.loadError(#"{"keys":[1]}"#) == "JWKS key 0: JWK is not a JSON object")
        #expect(F.loadError(#"{"keys":[{}]}"#) == "JWKS key 0: JWK has no kty")
    }

    @Test("a broken signing key fails the whole set, naming its index")
    func brokenKeyInSet() {
        #expect(
            F.loadError(F.jwks([F.rsa1(), F.p256(), rsa(n: nil)]))
                == "JWKS key 2: RSA JWK has no n")
    }

    // MARK: merging and printing

    @Test("merging keeps both sets' keys, so a secret's and a URL's keys both verify")
    func merging() throws {
        let secret = try F.keySet(F.oct1())
        let fetched = try JWTKeySet(jwks: Array(F.jwks([F.rsa1(), F.ed1(("use", .string("enc")))]).utf8))
        let merged = secret.merging(fetched)
        #expect(merged.count == 2)
        #expect(merged.skippedKeyCount == 1)
        let verifier = JWTVerifier(keys: merged)
        #expect(F.refusal(V.tokenHS256, verifier) == nil)
        #expect(F.refusal(V.tokenRS256, verifier) == nil)
        #expect(F.refusal(V.tokenES256, verifier) == "unknown key")
        #expect(JWTKeySet.empty.merging(secret).count == 1)
        #expect(JWTKeySet.empty.isEmpty)
    }

    @Test("printing or dumping keys and verifiers shows no secret")
    func printing() throws {
        let secret = Array("printing-secret-0123456789".utf8)
        let verifier = JWTVerifier(secret: secret)
        #expect(verifier.keys.description == "JWTKeySet(1 key)")
        #expect(try F.keySet(F.everyAlgorithm).description == "JWTKeySet(6 keys)")
        var dumped = ""
        dump(verifier, to: &dumped)
        let printed = "\(verifier)" + String(reflecting: verifier) + dumped
        #expect(!printed.contains("hmac"))
        #expect(!printed.contains(secret.map(String.init).joined(separator: ", ")))
        #expect(!printed.contains("\(secret[0]),"))
    }

    // MARK: start-up

    @Test("a broken JWK secret stops the bridge before it starts, naming the setting")
    func bridgeRefusesBrokenKeys() {
        let configuration = Configuration(databaseURI: "postgres://unused", jwtSecret: Array(#"{"kty":"RSA"}"#.utf8))
        #expect(throws: ConfigurationError("jwt-secret: RSA JWK has no n")) {
            _ = try Bridge(configuration: configuration, logger: Logger(label: "test"), eventLoopThreads: 1)
        }
    }
}
