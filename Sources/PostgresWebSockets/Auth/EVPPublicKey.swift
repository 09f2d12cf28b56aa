import COpenSSL

/// A public key held by libcrypto, built once when the keys are loaded.
///
/// `@unchecked Sendable`: the EVP_PKEY is never changed after `init`, and OpenSSL 3 lets many
/// threads use one key at once as long as none changes it (openssl-threads(7)). Everything a
/// verification changes (the EVP_MD_CTX and its EVP_PKEY_CTX) belongs to that one call.
final class EVPPublicKey: @unchecked Sendable {
    private let pkey: OpaquePointer
    /// The modulus size for RSA, the group size for EC.
    let bits: Int

    private init(_ pkey: OpaquePointer) {
        self.pkey = pkey
        bits = Int(EVP_PKEY_get_bits(pkey))
    }

    deinit {
        EVP_PKEY_free(pkey)
    }

    /// An RSA public key from its modulus and exponent (unsigned big-endian), or nil when
    /// libcrypto refuses them.
    static func rsa(modulus: [UInt8], exponent: [UInt8]) -> EVPPublicKey? {
        guard let n = bignum(modulus) else { return nil }
        defer { BN_free(n) }
        guard let e = bignum(exponent) else { return nil }
        defer { BN_free(e) }
        return fromData(type: "RSA") { builder in
            OSSL_PARAM_BLD_push_BN(builder, pgws_param_rsa_n(), n) == 1
                && OSSL_PARAM_BLD_push_BN(builder, pgws_param_rsa_e(), e) == 1
        }
    }

    /// An EC public key from an uncompressed point (0x04 || x || y), or nil when the point is
    /// not a valid public key of the curve: a broken key shows when it is loaded, not as every
    /// token it should verify being refused.
    static func ec(curve: ECCurve, point: [UInt8]) -> EVPPublicKey? {
        let key = curve.groupName.withCString { group in
            point.withUnsafeBytes { pointBytes in
                fromData(type: "EC") { builder in
                    OSSL_PARAM_BLD_push_utf8_string(builder, pgws_param_group_name(), group, 0) == 1
                        && OSSL_PARAM_BLD_push_octet_string(
                            builder, pgws_param_pub_key(), pointBytes.baseAddress, pointBytes.count) == 1
                }
            }
        }
        guard let key else { return nil }
        // Importing already refuses most bad points; the explicit check (on the curve, not the
        // point at infinity, of the group's order) does not depend on how import does it.
        guard let ctx = EVP_PKEY_CTX_new_from_pkey(nil, key.pkey, nil) else { return nil }
        defer { EVP_PKEY_CTX_free(ctx) }
        guard EVP_PKEY_public_check(ctx) == 1 else {
            ERR_clear_error()
            return nil
        }
        return key
    }

    /// An Ed25519 public key from its 32-byte encoding (RFC 8032 5.1.2), as JWK `x` holds it.
    static func ed25519(_ raw: [UInt8]) -> EVPPublicKey? {
        let pkey = raw.withUnsafeBytes { bytes in
            EVP_PKEY_new_raw_public_key(
                EVP_PKEY_ED25519, nil, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
        }
        guard let pkey else {
            ERR_clear_error()
            return nil
        }
        return EVPPublicKey(pkey)
    }

    /// Checks `signature` over `message`. `digest` is nil for Ed25519, which takes the whole
    /// message; `pss` selects RSASSA-PSS with MGF1 over the same digest and a salt exactly as
    /// long as the digest, as JWA requires (RFC 7518 3.5), instead of PKCS #1 v1.5.
    func verify(signature: [UInt8], message: [UInt8], digest: OpaquePointer?, pss: Bool) -> Bool {
        guard let ctx = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(ctx) }
        // Owned by `ctx`, freed with it.
        var pctx: OpaquePointer?
        var ok = EVP_DigestVerifyInit(ctx, &pctx, digest, nil, pkey) == 1
        if ok, pss {
            ok =
                EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1
                && EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, digest) == 1
                && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1
        }
        if ok {
            ok = signature.withUnsafeBytes { sig in
                message.withUnsafeBytes { tbs in
                    EVP_DigestVerify(
                        ctx, sig.baseAddress?.assumingMemoryBound(to: UInt8.self), sig.count,
                        tbs.baseAddress?.assumingMemoryBound(to: UInt8.self), tbs.count) == 1
                }
            }
        }
        // A refused signature leaves reasons on this thread's error queue; nobody reads them.
        if !ok { ERR_clear_error() }
        return ok
    }

    private static func bignum(_ bytes: [UInt8]) -> OpaquePointer? {
        bytes.withUnsafeBytes { raw in
            BN_bin2bn(raw.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(raw.count), nil)
        }
    }

    /// Builds a key of `type` from the parameters `push` adds. The builder keeps pointers to
    /// the values pushed until `OSSL_PARAM_BLD_to_param` copies them, so callers push from
    /// inside their buffers' scope, and this function converts before returning. The context
    /// keeps its type name, which therefore stays valid until the context is freed.
    private static func fromData(type: String, push: (OpaquePointer) -> Bool) -> EVPPublicKey? {
        defer { ERR_clear_error() }
        guard let builder = OSSL_PARAM_BLD_new() else { return nil }
        defer { OSSL_PARAM_BLD_free(builder) }
        guard push(builder), let params = OSSL_PARAM_BLD_to_param(builder) else { return nil }
        defer { OSSL_PARAM_free(params) }
        return type.withCString { typeName in
            guard let ctx = EVP_PKEY_CTX_new_from_name(nil, typeName, nil) else { return nil }
            defer { EVP_PKEY_CTX_free(ctx) }
            var pkey: OpaquePointer?
            guard EVP_PKEY_fromdata_init(ctx) == 1,
                EVP_PKEY_fromdata(ctx, &pkey, pgws_evp_pkey_public_key_selection(), params) == 1,
                let pkey
            else { return nil }
            return EVPPublicKey(pkey)
        }
    }
}
