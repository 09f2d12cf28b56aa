/// The curves JWS uses for ECDSA (RFC 7518 6.2.1.1). Others (secp256k1, brainpool) are not
/// offered: no JWS algorithm the bridge accepts names them.
enum ECCurve: String, Sendable {
    case p256 = "P-256"
    case p384 = "P-384"
    case p521 = "P-521"

    /// Bytes of one coordinate, and of r and of s in a JWS signature: the field size rounded
    /// up to whole bytes (RFC 7518 3.4, 6.2.1.2).
    var coordinateSize: Int {
        switch self {
        case .p256: 32
        case .p384: 48
        case .p521: 66
        }
    }

    /// libcrypto's name of the group.
    var groupName: String {
        switch self {
        case .p256: "prime256v1"
        case .p384: "secp384r1"
        case .p521: "secp521r1"
        }
    }
}
