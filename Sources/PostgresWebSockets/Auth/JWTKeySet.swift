/// The keys tokens are verified with: a raw HMAC secret, one JWK, or a JWK Set (RFC 7517).
///
/// Immutable, `Sendable` and cheap to copy (the public keys are shared references), so an
/// owner that reloads keys builds a new set and swaps the verifier holding it as a whole.
public struct JWTKeySet: Sendable {
    /// Bounds what a JWK Set may cost to load: one held in a configuration or, later, fetched
    /// from a URL. Real sets hold a handful of keys of a few hundred bytes each.
    public static let maxDocumentBytes = 1024 * 1024
    public static let maxKeys = 100

    let keys: [JWTKey]
    /// Keys of a JWK Set left out because they are for something else (see `init(jwks:)`).
    public let skippedKeyCount: Int

    /// No keys: a verifier holding it refuses every token.
    public static let empty = JWTKeySet(keys: [], skippedKeyCount: 0)

    init(keys: [JWTKey], skippedKeyCount: Int) {
        self.keys = keys
        self.skippedKeyCount = skippedKeyCount
    }

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }

    /// The keys a configured secret holds, recognized the way PostgREST reads its JWT secret:
    /// a JSON object with `keys` is a JWK Set, one with `kty` a single JWK, and anything else a
    /// raw HMAC secret, used byte for byte as before.
    ///
    /// Unlike PostgREST, text clearly meant as a JWK but broken is an error, never a raw secret:
    /// the text of a public key is public, and as an HMAC secret it would let anyone sign tokens.
    /// So a JSON object with `keys` or `kty` must be a valid key or set, and text that starts
    /// with `{`, mentions `"kty"` or `"keys"` and is not JSON is refused too. Text that starts
    /// with `{` and is longer than `maxDocumentBytes` is refused rather than parsed.
    public init(secret: [UInt8]) throws(JWTKeyError) {
        let raw = JWTKeySet(keys: [JWTKey(kid: nil, algorithm: nil, material: .hmac(secret))], skippedKeyCount: 0)
        guard secret.first(where: { !Self.isJSONWhitespace($0) }) == UInt8(ascii: "{") else {
            self = raw
            return
        }
        guard secret.count <= Self.maxDocumentBytes else {
            throw JWTKeyError("JWK text is longer than \(Self.maxDocumentBytes) bytes")
        }
        let document: JSONValue
        do {
            document = try JSONParser.parse(secret)
        } catch {
            if Self.contains(secret, #""kty""#) || Self.contains(secret, #""keys""#) {
                throw JWTKeyError("JWK text is not valid JSON: \(error.description)")
            }
            self = raw
            return
        }
        if document["keys"] != nil {
            self = try JWTKeySet(set: document)
        } else if document["kty"] != nil {
            self = JWTKeySet(keys: [try JWTKey(jwk: document)], skippedKeyCount: 0)
        } else {
            self = raw
        }
    }

    /// The keys of a JWK Set document (`{"keys":[...]}`), as served at a JWKS URL.
    ///
    /// Keys for something else are left out, as RFC 7517 5 recommends: a published set often
    /// holds encryption keys (`use` `enc`) or key types and curves this bridge does not verify
    /// next to the signing keys, and must stay usable. Such a key could never verify a token
    /// anyway: an encryption key must not be trusted for signatures (RFC 7517 4.2). A key that
    /// is meant for signatures but broken (bad base64url, a short RSA modulus, an EC point off
    /// its curve, ...) fails the whole set, so a mistake shows when keys are loaded instead of
    /// as refused tokens later. A set left with no key is an error.
    public init(jwks: [UInt8]) throws(JWTKeyError) {
        guard jwks.count <= Self.maxDocumentBytes else {
            throw JWTKeyError("JWKS is longer than \(Self.maxDocumentBytes) bytes")
        }
        let document: JSONValue
        do {
            document = try JSONParser.parse(jwks)
        } catch {
            throw JWTKeyError("JWKS is not valid JSON: \(error.description)")
        }
        self = try JWTKeySet(set: document)
    }

    private init(set document: JSONValue) throws(JWTKeyError) {
        guard case .object = document, let member = document["keys"] else {
            throw JWTKeyError("JWKS is not an object with a keys member")
        }
        guard case .array(let entries) = member else { throw JWTKeyError("JWKS keys is not an array") }
        guard entries.count <= Self.maxKeys else { throw JWTKeyError("JWKS has more than \(Self.maxKeys) keys") }
        var keys: [JWTKey] = []
        var firstSkipped: String?
        for (index, entry) in entries.enumerated() {
            do {
                keys.append(try JWTKey(jwk: entry))
            } catch  where error.isForSomethingElse {
                firstSkipped = firstSkipped ?? "key \(index): \(error.reason)"
            } catch {
                throw JWTKeyError("JWKS key \(index): \(error.reason)")
            }
        }
        guard !keys.isEmpty else {
            throw JWTKeyError("JWKS has no key for verifying signatures" + (firstSkipped.map { " (\($0))" } ?? ""))
        }
        self.init(keys: keys, skippedKeyCount: entries.count - keys.count)
    }

    /// Both sets' keys, this set's first: the configured secret's keys next to fetched ones.
    public func merging(_ other: JWTKeySet) -> JWTKeySet {
        JWTKeySet(keys: keys + other.keys, skippedKeyCount: skippedKeyCount + other.skippedKeyCount)
    }

    private static func isJSONWhitespace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\n")
            || byte == UInt8(ascii: "\r")
    }

    private static func contains(_ bytes: [UInt8], _ text: StaticString) -> Bool {
        text.withUTF8Buffer { needle in
            guard needle.count <= bytes.count else { return false }
            return (0...(bytes.count - needle.count)).contains { start in
                (0..<needle.count).allSatisfy { bytes[start + $0] == needle[$0] }
            }
        }
    }
}

extension JWTKeySet: CustomStringConvertible, CustomReflectable {
    /// A count only: printing or dumping a set must never show a secret.
    public var description: String { "JWTKeySet(\(count) key\(count == 1 ? "" : "s"))" }
    public var customMirror: Mirror { Mirror(self, children: []) }
}
