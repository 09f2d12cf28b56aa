/// One key a token's signature may be checked against: a shared HMAC secret or a public key.
struct JWTKey: Sendable {
    enum Material: Sendable {
        /// Shared secret for HS256/384/512: a raw configured secret or an `oct` JWK's `k`.
        case hmac([UInt8])
        case rsa(EVPPublicKey)
        case ec(EVPPublicKey, ECCurve)
        case ed25519(EVPPublicKey)

        /// Whether a key of this type and size may verify `algorithm`. Never across types:
        /// a public key used as an HMAC secret (or the reverse) is the algorithm-confusion attack.
        func accepts(_ algorithm: JWSAlgorithm) -> Bool {
            switch self {
            case .hmac: algorithm.hmac != nil
            case .rsa: algorithm.isRSA
            case .ec(_, let curve): algorithm.curve == curve
            case .ed25519: algorithm == .edDSA
            }
        }
    }

    /// The JWK's `kid`: a token naming a kid is checked against the keys with that kid only.
    let kid: String?
    /// The JWK's `alg`, which then is the only algorithm the key verifies.
    let algorithm: JWSAlgorithm?
    let material: Material

    func fits(_ algorithm: JWSAlgorithm) -> Bool {
        if let own = self.algorithm, own != algorithm { return false }
        return material.accepts(algorithm)
    }

    /// Whether `signature` (decoded from the token) signs `signingInput` under `algorithm`.
    func verify(_ algorithm: JWSAlgorithm, signature: [UInt8], signingInput: [UInt8]) -> Bool {
        guard fits(algorithm) else { return false }
        switch material {
        case .hmac(let secret):
            guard let hmac = algorithm.hmac else { return false }
            let expected = signingInput.withUnsafeBytes { hmac.sign(key: secret, message: $0) }
            return constantTimeEquals(signature, expected)
        case .rsa(let key):
            // RSASSA signatures are exactly as long as the modulus (RFC 8017 8.1.2, 8.2.2).
            guard signature.count == (key.bits + 7) / 8 else { return false }
            return key.verify(
                signature: signature, message: signingInput, digest: algorithm.digest, pss: algorithm.isPSS)
        case .ec(let key, let curve):
            // JWS fixes the length of r || s (RFC 7518 3.4); DER or shortened forms are refused.
            guard signature.count == 2 * curve.coordinateSize else { return false }
            return key.verify(
                signature: ECDSASignature.der(fromRaw: signature), message: signingInput, digest: algorithm.digest,
                pss: false)
        case .ed25519(let key):
            guard signature.count == 64 else { return false }
            return key.verify(signature: signature, message: signingInput, digest: nil, pss: false)
        }
    }
}
