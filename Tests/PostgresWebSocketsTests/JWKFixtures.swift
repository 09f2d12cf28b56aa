@testable import PostgresWebSockets

/// JWK texts built from the public members in `JWKVectors`, so a test can vary one member.
enum JWKFixtures {
    typealias Member = (key: String, value: JSONValue)

    static func jwk(_ members: [Member]) -> String {
        JSONValue.object(members).serialized
    }

    static func jwks(_ keys: [String]) -> String {
        "{\"keys\":[" + keys.joined(separator: ",") + "]}"
    }

    private static func members(_ pairs: [(String, String)], kid: String?, extra: [Member]) -> [Member] {
        var result = pairs.map { (key: $0.0, value: JSONValue.string($0.1)) }
        if let kid { result.append(("kid", .string(kid))) }
        return result + extra
    }

    static func rsa1(kid: String? = "rsa-1", _ extra: Member...) -> String {
        jwk(members([("kty", "RSA"), ("n", JWKVectors.rsa1N), ("e", JWKVectors.rsa1E)], kid: kid, extra: extra))
    }

    static func rsa2(kid: String? = "rsa-2", _ extra: Member...) -> String {
        jwk(members([("kty", "RSA"), ("n", JWKVectors.rsa2N), ("e", JWKVectors.rsa2E)], kid: kid, extra: extra))
    }

    static func p256(kid: String? = "ec-256", _ extra: Member...) -> String {
        jwk(
            members(
                [("kty", "EC"), ("crv", "P-256"), ("x", JWKVectors.p256X), ("y", JWKVectors.p256Y)], kid: kid,
                extra: extra))
    }

    static func p256b(kid: String? = "ec-256b", _ extra: Member...) -> String {
        jwk(
            members(
                [("kty", "EC"), ("crv", "P-256"), ("x", JWKVectors.p256bX), ("y", JWKVectors.p256bY)], kid: kid,
                extra: extra))
    }

    static func p384(kid: String? = "ec-384", _ extra: Member...) -> String {
        jwk(
            members(
                [("kty", "EC"), ("crv", "P-384"), ("x", JWKVectors.p384X), ("y", JWKVectors.p384Y)], kid: kid,
                extra: extra))
    }

    static func p521(kid: String? = "ec-521", _ extra: Member...) -> String {
        jwk(
            members(
                [("kty", "EC"), ("crv", "P-521"), ("x", JWKVectors.p521X), ("y", JWKVectors.p521Y)], kid: kid,
                extra: extra))
    }

    static func ed1(kid: String? = "ed-1", _ extra: Member...) -> String {
        jwk(members([("kty", "OKP"), ("crv", "Ed25519"), ("x", JWKVectors.ed1X)], kid: kid, extra: extra))
    }

    static func ed2(kid: String? = "ed-2", _ extra: Member...) -> String {
        jwk(members([("kty", "OKP"), ("crv", "Ed25519"), ("x", JWKVectors.ed2X)], kid: kid, extra: extra))
    }

    static func oct1(kid: String? = "hs-1", _ extra: Member...) -> String {
        jwk(members([("kty", "oct"), ("k", JWKVectors.oct1K)], kid: kid, extra: extra))
    }

    static func oct2(kid: String? = "hs-2", _ extra: Member...) -> String {
        jwk(members([("kty", "oct"), ("k", JWKVectors.oct2K)], kid: kid, extra: extra))
    }

    /// One key for every algorithm, each with its kid.
    static var everyAlgorithm: String {
        jwks([rsa1(), p256(), p384(), p521(), ed1(), oct1()])
    }

    static func keySet(_ text: String) throws -> JWTKeySet {
        try JWTKeySet(secret: Array(text.utf8))
    }

    static func verifier(_ text: String, audience: String? = nil) throws -> JWTVerifier {
        JWTVerifier(keys: try keySet(text), audience: audience)
    }

    /// The reason `text` is refused as a secret, or nil when it loads.
    static func loadError(_ text: String) -> String? {
        do {
            _ = try JWTKeySet(secret: Array(text.utf8))
            return nil
        } catch {
            return error.reason
        }
    }

    /// The reason a token is refused, or nil when it verifies (at a time before every `exp`).
    static func refusal(_ token: String, _ verifier: JWTVerifier, now: Double = 1_700_000_000) -> String? {
        do {
            _ = try verifier.verify(Substring(token), now: now)
            return nil
        } catch {
            return error.reason
        }
    }

    /// A token signed with HMAC under any key, with the library's HMAC (itself checked against
    /// PyJWT and RFC 4231 in JWTVerifierTests): for headers and claims the vectors do not cover.
    static func mintHMAC(header: String, claims: String, key: [UInt8], algorithm: JWTAlgorithm = .hs256) -> String {
        let input = base64url(Array(header.utf8)) + "." + base64url(Array(claims.utf8))
        return input + "." + base64url(algorithm.sign(key: key, message: input))
    }

    static func base64url(_ bytes: [UInt8]) -> String {
        Base64.encode(bytes, urlSafe: true, padded: false)
    }

    /// The token with its signature replaced.
    static func resigned(_ token: String, signature: [UInt8]) -> String {
        let input = token[..<token.lastIndex(of: ".")!]
        return input + "." + base64url(signature)
    }

    static func signature(of token: String) -> [UInt8] {
        Base64.decode(token[token.index(after: token.lastIndex(of: ".")!)...].utf8)!
    }

    /// The bytes of oct1's `k`: the HMAC key of the HS vectors.
    static var oct1Bytes: [UInt8] { Base64.decode(JWKVectors.oct1K)! }
}
