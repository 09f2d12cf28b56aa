import COpenSSL

/// Every `alg` a token may name that the bridge can check (RFC 7518 3.1, RFC 8037 3.1).
///
/// `none` is deliberately not a case: an unsigned token is never accepted, whatever the keys.
public enum JWSAlgorithm: String, Sendable, CaseIterable {
    case hs256 = "HS256"
    case hs384 = "HS384"
    case hs512 = "HS512"
    case rs256 = "RS256"
    case rs384 = "RS384"
    case rs512 = "RS512"
    case ps256 = "PS256"
    case ps384 = "PS384"
    case ps512 = "PS512"
    case es256 = "ES256"
    case es384 = "ES384"
    case es512 = "ES512"
    case edDSA = "EdDSA"

    /// The HMAC to compute, for the algorithms a shared secret verifies.
    var hmac: JWTAlgorithm? {
        switch self {
        case .hs256: .hs256
        case .hs384: .hs384
        case .hs512: .hs512
        default: nil
        }
    }

    /// Whether RSA keys verify it, with PKCS #1 v1.5 (RS) or PSS (PS) padding.
    var isRSA: Bool { isPSS || self == .rs256 || self == .rs384 || self == .rs512 }

    var isPSS: Bool { self == .ps256 || self == .ps384 || self == .ps512 }

    /// The only curve whose keys verify it: JWA binds each ES algorithm to one curve (RFC 7518 3.4).
    var curve: ECCurve? {
        switch self {
        case .es256: .p256
        case .es384: .p384
        case .es512: .p521
        default: nil
        }
    }

    /// The digest libcrypto hashes the signing input with; nil for EdDSA, which hashes inside
    /// the signature scheme and must be given the message itself.
    var digest: OpaquePointer? {
        switch self {
        case .hs256, .rs256, .ps256, .es256: EVP_sha256()
        case .hs384, .rs384, .ps384, .es384: EVP_sha384()
        case .hs512, .rs512, .ps512, .es512: EVP_sha512()
        case .edDSA: nil
        }
    }
}
