import COpenSSL

/// The HMAC algorithms of JWS (HS256, HS384, HS512), computed by the system's libcrypto; the
/// HMAC half of `JWSAlgorithm`, which names every algorithm a token may use.
public enum JWTAlgorithm: String, Sendable, CaseIterable {
    case hs256 = "HS256"
    case hs384 = "HS384"
    case hs512 = "HS512"

    var digestLength: Int {
        switch self {
        case .hs256: 32
        case .hs384: 48
        case .hs512: 64
        }
    }

    /// One-shot HMAC; `HMAC_CTX_*` is deprecated in OpenSSL 3, the one-shot call is not.
    public func sign(key: [UInt8], message: UnsafeRawBufferPointer) -> [UInt8] {
        let digest: OpaquePointer? =
            switch self {
            case .hs256: EVP_sha256()
            case .hs384: EVP_sha384()
            case .hs512: EVP_sha512()
            }
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = key.withUnsafeBytes { keyBytes in
            output.withUnsafeMutableBufferPointer { out in
                HMAC(
                    digest,
                    keyBytes.baseAddress, Int32(keyBytes.count),
                    message.baseAddress?.assumingMemoryBound(to: UInt8.self), message.count,
                    out.baseAddress, &length
                ) != nil
            }
        }
        precondition(ok && Int(length) == digestLength, "libcrypto HMAC failed")
        output.removeLast(output.count - Int(length))
        return output
    }

    public func sign(key: [UInt8], message: String) -> [UInt8] {
        var message = message
        return message.withUTF8 { sign(key: key, message: UnsafeRawBufferPointer($0)) }
    }
}

/// Compares two byte strings in time that depends only on their length, so a forger
/// cannot learn how many leading signature bytes were right.
func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    if a.isEmpty { return true }
    return a.withUnsafeBytes { pa in
        b.withUnsafeBytes { pb in
            CRYPTO_memcmp(pa.baseAddress, pb.baseAddress, a.count) == 0
        }
    }
}
