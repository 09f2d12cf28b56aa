/// Why a token was refused. Answered with HTTP 401 at the handshake (503 while keys that
/// could verify it are still being fetched, see `keyMiss`).
public struct TokenError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    /// Whether other keys could have given another answer: what a server that fetches keys
    /// from a URL needs to know, and nothing a client sees.
    let keyMiss: KeyMiss

    enum KeyMiss: Sendable {
        /// The refusal does not depend on which keys there are beyond the ones that were tried.
        case none
        /// The token names a `kid` that no key has (keys without a kid may have stood in and
        /// refused it): fetched keys may be stale.
        case unknownKid
        /// No key takes the token at all: none is configured, or none fits its algorithm.
        case noFittingKey
    }

    init(_ reason: String, keyMiss: KeyMiss = .none) {
        self.reason = reason
        self.keyMiss = keyMiss
    }

    public var description: String { reason }

    /// Equal when the reasons are: the key miss is a hint for the server, not another refusal.
    public static func == (lhs: TokenError, rhs: TokenError) -> Bool { lhs.reason == rhs.reason }

    static let malformed = TokenError("malformed JWT")
    static let badSignature = TokenError("invalid JWT signature")
    static let expired = TokenError("JWT expired")
    static let notYetValid = TokenError("JWT not yet valid")
    static let audienceNotAccepted = TokenError("JWT audience not accepted")
    /// The token names a `kid` no key has. Told apart from other refusals because keys
    /// fetched from a URL may be stale: this is the refusal that warrants fetching them again.
    public static let unknownKey = TokenError("unknown key", keyMiss: .unknownKid)
    static let noKeys = TokenError("no usable JWT key configured", keyMiss: .noFittingKey)
}

/// A token whose signature, time claims and audience were checked.
public struct VerifiedToken: Sendable {
    /// All claims, in the token's order.
    public let claims: JSONValue
    /// `exp` in seconds since 1970, when the token has one.
    public let expiresAt: Double?
}

/// Verifies compact JWS tokens signed with any key of a `JWTKeySet` (HMAC, RSA, RSA-PSS,
/// ECDSA or Ed25519; see `JWSAlgorithm`), and their time and audience claims.
///
/// The header is parsed first only to learn the algorithm and key; the claims are parsed only
/// after the signature matched, so unauthenticated input never reaches the claims parser.
/// A value: an owner that reloads keys replaces its verifier as a whole.
public struct JWTVerifier: Sendable {
    public let keys: JWTKeySet
    /// When set, a token's `aud` claim must name it (RFC 7519 4.1.3).
    public let audience: String?
    /// Tokens are carried in a URL path, so anything beyond this is refused before any work.
    public static let maxTokenLength = 16 * 1024

    public init(keys: JWTKeySet, audience: String? = nil) {
        self.keys = keys
        self.audience = audience
    }

    /// A verifier for a configured secret, recognized as `JWTKeySet(secret:)` does. Secret
    /// text that is a broken JWK or JWK Set gives a verifier that refuses every token (it is
    /// never used as an HMAC secret); build the key set with `JWTKeySet(secret:)` to learn why.
    public init(secret: [UInt8]) {
        self.init(keys: (try? JWTKeySet(secret: secret)) ?? .empty)
    }

    public func verify(_ token: Substring, now: Double) throws(TokenError) -> VerifiedToken {
        guard token.utf8.count <= Self.maxTokenLength else { throw TokenError("JWT too long") }
        let parts = token.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw TokenError.malformed }
        let (headerPart, claimsPart, signaturePart) = (parts[0], parts[1], parts[2])

        guard let headerBytes = Base64.decodeURLSafe(headerPart),
            let header = try? JSONParser.parse(headerBytes),
            case .object = header
        else { throw TokenError("malformed JWT header") }

        guard let algName = header["alg"]?.stringValue else { throw TokenError("JWT header has no alg") }
        guard let algorithm = JWSAlgorithm(rawValue: algName) else {
            throw TokenError("unsupported JWT algorithm \(Self.printable(algName))")
        }
        // RFC 7515 4.1.11: a recipient must refuse critical extensions it does not understand.
        if header["crit"] != nil { throw TokenError("unsupported JWT crit header") }

        // After the header: a token that is malformed anyway is refused as such, keys or not.
        guard !keys.isEmpty else { throw TokenError.noKeys }
        let signingInputLength = headerPart.count + 1 + claimsPart.count
        let signingInput = Array(token.utf8.prefix(signingInputLength))
        try keys.verify(
            algorithm, kid: header["kid"], signature: Base64.decodeURLSafe(signaturePart), signingInput: signingInput)

        guard let claimsBytes = Base64.decodeURLSafe(claimsPart),
            let claims = try? JSONParser.parse(claimsBytes),
            case .object = claims
        else { throw TokenError("malformed JWT claims") }

        let expiresAt = try Self.timeClaim("exp", in: claims)
        if let expiresAt, now >= expiresAt { throw TokenError.expired }
        if let notBefore = try Self.timeClaim("nbf", in: claims), now < notBefore { throw TokenError.notYetValid }
        if let audience { try Self.checkAudience(audience, in: claims) }
        return VerifiedToken(claims: claims, expiresAt: expiresAt)
    }

    private static func timeClaim(_ name: String, in claims: JSONValue) throws(TokenError) -> Double? {
        guard let value = claims[name] else { return nil }
        guard let seconds = value.doubleValue, seconds.isFinite else {
            throw TokenError("JWT \(name) claim is not a number")
        }
        return seconds
    }

    /// `aud` is one string or an array of strings (RFC 7519 4.1.3); it must name `audience`
    /// exactly, byte for byte. A token without `aud` is not meant for anyone in particular,
    /// so it is refused as well.
    private static func checkAudience(_ audience: String, in claims: JSONValue) throws(TokenError) {
        let names: [JSONValue]
        switch claims["aud"] {
        case nil: throw TokenError.audienceNotAccepted
        case .array(let items)?: names = items
        case let single?: names = [single]
        }
        var accepted = false
        for name in names {
            guard let text = name.stringValue else {
                throw TokenError("JWT aud claim must be a string or an array of strings")
            }
            if text.utf8.elementsEqual(audience.utf8) { accepted = true }
        }
        if !accepted { throw TokenError.audienceNotAccepted }
    }

    /// Keeps reasons one short printable line: the algorithm name comes from the attacker.
    static func printable(_ text: String) -> String {
        let cleaned = text.unicodeScalars.prefix(32).map {
            $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7F ? "?" : String($0)
        }.joined()
        return text.unicodeScalars.count > 32 ? cleaned + "..." : cleaned
    }
}
