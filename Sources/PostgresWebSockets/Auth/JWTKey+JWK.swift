extension JWTKey {
    /// RSA keys shorter than this are refused: NIST SP 800-131A retired them, and JWA
    /// requires at least 2048 bits (RFC 7518 3.3).
    static let minRSABits = 2048
    /// Longer RSA keys are refused so that one verification stays cheap.
    static let maxRSABits = 16384
    /// RFC 7518 3.2: an HMAC key at least as long as the hash; 32 bytes for HS256. Raw
    /// configured secrets are exempt, they keep being accepted as before.
    static let minOctBytes = 32

    /// Reads one JWK (RFC 7517 4) as a verification key.
    ///
    /// Throws an error with `isForSomethingElse` for a well-formed key that is not for
    /// verifying JWS signatures here (another `use`, no `verify` in `key_ops`, a key type,
    /// curve or `alg` this bridge does not verify), and a plain error for a broken one.
    init(jwk: JSONValue) throws(JWTKeyError) {
        guard case .object = jwk else { throw JWTKeyError("JWK is not a JSON object") }
        guard let kty = try Self.string("kty", in: jwk) else { throw JWTKeyError("JWK has no kty") }
        let kid = try Self.string("kid", in: jwk)
        if let use = try Self.string("use", in: jwk), use != "sig" {
            throw JWTKeyError("JWK use is \(Self.quoted(use)), not \"sig\"", isForSomethingElse: true)
        }
        if let operations = jwk["key_ops"] {
            guard case .array(let items) = operations, items.allSatisfy({ $0.stringValue != nil }) else {
                throw JWTKeyError("JWK key_ops is not an array of strings")
            }
            guard items.contains(.string("verify")) else {
                throw JWTKeyError("JWK key_ops does not include \"verify\"", isForSomethingElse: true)
            }
        }
        var algorithm: JWSAlgorithm?
        if let name = try Self.string("alg", in: jwk) {
            guard let named = JWSAlgorithm(rawValue: name) else {
                throw JWTKeyError("unsupported JWK alg \(Self.quoted(name))", isForSomethingElse: true)
            }
            algorithm = named
        }

        let material: Material
        switch kty {
        case "oct": material = try Self.oct(jwk, algorithm: algorithm)
        case "RSA": material = try Self.rsa(jwk)
        case "EC": material = try Self.ec(jwk)
        case "OKP": material = try Self.okp(jwk)
        default: throw JWTKeyError("unsupported JWK kty \(Self.quoted(kty))", isForSomethingElse: true)
        }
        if let algorithm, !material.accepts(algorithm) {
            throw JWTKeyError("JWK alg \(algorithm.rawValue) does not fit its \(Self.describe(material)) key")
        }
        self.init(kid: kid, algorithm: algorithm, material: material)
    }

    private static func oct(_ jwk: JSONValue, algorithm: JWSAlgorithm?) throws(JWTKeyError) -> Material {
        let secret = try bytes("k", in: jwk, kty: "oct")
        let minimum = max(minOctBytes, algorithm?.hmac?.digestLength ?? 0)
        guard secret.count >= minimum else { throw JWTKeyError("oct JWK k is shorter than \(minimum) bytes") }
        return .hmac(secret)
    }

    private static func rsa(_ jwk: JSONValue) throws(JWTKeyError) -> Material {
        try refusePrivateMembers(["d", "p", "q", "dp", "dq", "qi", "oth"], in: jwk, kty: "RSA")
        let modulus = Array(try bytes("n", in: jwk, kty: "RSA").drop(while: { $0 == 0 }))
        let exponent = Array(try bytes("e", in: jwk, kty: "RSA").drop(while: { $0 == 0 }))
        let bits = modulus.first.map { modulus.count * 8 - $0.leadingZeroBitCount } ?? 0
        guard bits >= minRSABits else { throw JWTKeyError("RSA JWK n is shorter than \(minRSABits) bits") }
        guard bits <= maxRSABits else { throw JWTKeyError("RSA JWK n is longer than \(maxRSABits) bits") }
        guard modulus.last! & 1 == 1 else { throw JWTKeyError("RSA JWK n is even") }
        // An even or unit exponent is no RSA key; libcrypto's own limit on e is 64 bits.
        guard exponent.count <= 8, let low = exponent.last, low & 1 == 1, exponent != [1] else {
            throw JWTKeyError("RSA JWK e is not an odd number from 3 to 2^64-1")
        }
        guard let key = EVPPublicKey.rsa(modulus: modulus, exponent: exponent) else {
            throw JWTKeyError("RSA JWK refused by libcrypto")
        }
        return .rsa(key)
    }

    private static func ec(_ jwk: JSONValue) throws(JWTKeyError) -> Material {
        guard let name = try string("crv", in: jwk) else { throw JWTKeyError("EC JWK has no crv") }
        guard let curve = ECCurve(rawValue: name) else {
            throw JWTKeyError("unsupported EC JWK crv \(quoted(name))", isForSomethingElse: true)
        }
        try refusePrivateMembers(["d"], in: jwk, kty: "EC")
        // Fixed sizes (RFC 7518 6.2.1.2, 6.2.1.3): a shorter coordinate is not padded here.
        var point: [UInt8] = [0x04]
        for member in ["x", "y"] {
            let coordinate = try bytes(member, in: jwk, kty: "EC")
            guard coordinate.count == curve.coordinateSize else {
                throw JWTKeyError("EC JWK \(member) is not \(curve.coordinateSize) bytes, as \(name) needs")
            }
            point.append(contentsOf: coordinate)
        }
        guard let key = EVPPublicKey.ec(curve: curve, point: point) else {
            throw JWTKeyError("EC JWK point is not on the curve \(name)")
        }
        return .ec(key, curve)
    }

    private static func okp(_ jwk: JSONValue) throws(JWTKeyError) -> Material {
        guard let name = try string("crv", in: jwk) else { throw JWTKeyError("OKP JWK has no crv") }
        // X25519 and X448 are for key agreement; Ed448 is not offered.
        guard name == "Ed25519" else {
            throw JWTKeyError("unsupported OKP JWK crv \(quoted(name))", isForSomethingElse: true)
        }
        try refusePrivateMembers(["d"], in: jwk, kty: "OKP")
        let raw = try bytes("x", in: jwk, kty: "OKP")
        guard raw.count == 32 else { throw JWTKeyError("OKP JWK x is not 32 bytes, as Ed25519 needs") }
        guard let key = EVPPublicKey.ed25519(raw) else { throw JWTKeyError("OKP JWK refused by libcrypto") }
        return .ed25519(key)
    }

    /// The bridge only verifies: a private key in its configuration is one more copy to leak,
    /// and most likely a mistake (the signer's file configured by accident), so it is refused
    /// rather than trimmed to its public part.
    private static func refusePrivateMembers(_ names: [String], in jwk: JSONValue, kty: String) throws(JWTKeyError) {
        if names.contains(where: { jwk[$0] != nil }) {
            throw JWTKeyError("\(kty) JWK holds private key members; configure the public key only")
        }
    }

    /// A base64url member (RFC 7518 2: unpadded, URL alphabet).
    private static func bytes(_ name: String, in jwk: JSONValue, kty: String) throws(JWTKeyError) -> [UInt8] {
        guard let member = jwk[name] else { throw JWTKeyError("\(kty) JWK has no \(name)") }
        guard let text = member.stringValue else { throw JWTKeyError("\(kty) JWK \(name) is not a string") }
        guard let bytes = Base64.decodeURLSafe(text.utf8) else {
            throw JWTKeyError("\(kty) JWK \(name) is not base64url")
        }
        return bytes
    }

    private static func string(_ name: String, in jwk: JSONValue) throws(JWTKeyError) -> String? {
        guard let member = jwk[name] else { return nil }
        guard let text = member.stringValue else { throw JWTKeyError("JWK \(name) is not a string") }
        return text
    }

    /// Names (kty, crv, alg, use) are shown so a refusal says what was found; they are cut
    /// short and stripped of control characters like any text from outside.
    private static func quoted(_ text: String) -> String {
        "\"" + JWTVerifier.printable(text) + "\""
    }

    private static func describe(_ material: Material) -> String {
        switch material {
        case .hmac: "oct"
        case .rsa: "RSA"
        case .ec(_, let curve): "EC \(curve.rawValue)"
        case .ed25519: "Ed25519"
        }
    }
}
