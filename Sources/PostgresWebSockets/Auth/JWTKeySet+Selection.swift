extension JWTKeySet {
    /// Checks a token's signature against the keys its header selects:
    ///
    /// - A token with a `kid` is checked against the keys with that kid only. When no key has
    ///   it, keys without a kid stand in (they fit any token, which keeps a raw secret working
    ///   for tokens that name a kid); with none of those either, the kid is an `unknownKey`.
    /// - A token without a `kid` is checked against every key.
    /// - Of those, only keys that fit the token's `alg` are tried: the key's own `alg` when it
    ///   has one, and its type always, so no public key ever checks an HMAC and no secret ever
    ///   checks a public-key signature.
    ///
    /// `kid` is the header member as found; one that is not a string names no key. `signature`
    /// is nil when it was not base64url.
    ///
    /// A refusal of a token whose string `kid` no key has carries `KeyMiss.unknownKid`, whether
    /// keys without a kid stood in or not: keys fetched from a URL may be stale. A refusal
    /// because no key takes the algorithm carries `KeyMiss.noFittingKey`.
    func verify(
        _ algorithm: JWSAlgorithm, kid: JSONValue?, signature: [UInt8]?, signingInput: [UInt8]
    ) throws(TokenError) {
        let name = kid?.stringValue
        let onlyNamed = name != nil && keys.contains { Self.same($0.kid, name) }
        // A kid that is not a string can never be found, however often keys are fetched.
        let miss: TokenError.KeyMiss = name != nil && !onlyNamed ? .unknownKid : .none
        if kid != nil, !onlyNamed, !keys.contains(where: { $0.kid == nil }) {
            throw miss == .unknownKid ? TokenError.unknownKey : TokenError(TokenError.unknownKey.reason)
        }

        var anyFits = false
        for key in keys where key.fits(algorithm) {
            if kid != nil, onlyNamed ? !Self.same(key.kid, name) : key.kid != nil { continue }
            anyFits = true
            guard let signature else { break }
            if key.verify(algorithm, signature: signature, signingInput: signingInput) { return }
        }
        guard anyFits else {
            // When no key at all takes the algorithm, the reason is the one a raw secret gave.
            let fitMiss = miss == .none ? TokenError.KeyMiss.noFittingKey : miss
            if keys.contains(where: { $0.fits(algorithm) }) {
                throw TokenError("JWT algorithm \(algorithm.rawValue) does not fit the token's key", keyMiss: fitMiss)
            }
            throw TokenError("unsupported JWT algorithm \(algorithm.rawValue)", keyMiss: fitMiss)
        }
        throw TokenError(TokenError.badSignature.reason, keyMiss: miss)
    }

    /// Key IDs are compared byte for byte (RFC 7515 4.1.4: case-sensitive), not by Unicode
    /// canonical equivalence as `String ==` would.
    private static func same(_ a: String?, _ b: String?) -> Bool {
        guard let a, let b else { return false }
        return a.utf8.elementsEqual(b.utf8)
    }
}
