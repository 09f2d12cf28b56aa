import COpenSSL
import Foundation
import PostgresWebSockets

/// An asymmetric signing key made at run time with libcrypto, for tokens the server checks
/// against its public JWK: RS256 (RSA-2048), ES256 (P-256) or EdDSA (Ed25519). The private
/// key travels to other processes (the bench's workers) as PEM.
public final class TestSigningKey: @unchecked Sendable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case rs256 = "RS256"
        case es256 = "ES256"
        case edDSA = "EdDSA"
    }

    public let kind: Kind
    public let kid: String
    /// Immutable once made: libcrypto allows concurrent signing with one EVP_PKEY.
    private let key: OpaquePointer

    public init(_ kind: Kind, kid: String = "test-key") throws {
        self.kind = kind
        self.kid = kid
        let (name, setup): (String, (OpaquePointer) -> Int32) =
            switch kind {
            case .rs256: ("RSA", { EVP_PKEY_CTX_set_rsa_keygen_bits($0, 2048) })
            case .es256: ("EC", { EVP_PKEY_CTX_set_group_name($0, "P-256") })
            case .edDSA: ("ED25519", { _ in 1 })
            }
        guard let context = EVP_PKEY_CTX_new_from_name(nil, name, nil) else { throw Failure("no \(name) context") }
        defer { EVP_PKEY_CTX_free(context) }
        var key: OpaquePointer? = nil
        guard EVP_PKEY_keygen_init(context) == 1, setup(context) == 1, EVP_PKEY_generate(context, &key) == 1,
            let key
        else { throw Failure("\(name) key generation failed") }
        self.key = key
    }

    /// Loads a key written by `privateKeyPEM`.
    public init(pem: String, kind: Kind, kid: String) throws {
        self.kind = kind
        self.kid = kid
        let bytes = Array(pem.utf8)
        // A memory BIO reads the bytes in place: they must outlive it, not just the call.
        let key = try bytes.withUnsafeBytes { buffer -> OpaquePointer in
            guard let bio = BIO_new_mem_buf(buffer.baseAddress, Int32(buffer.count)) else { throw Failure("BIO") }
            defer { BIO_free(bio) }
            guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else { throw Failure("not a private key PEM") }
            return key
        }
        self.key = key
    }

    deinit {
        EVP_PKEY_free(key)
    }

    public var privateKeyPEM: String {
        let bio = BIO_new(BIO_s_mem())!
        defer { BIO_free(bio) }
        PEM_write_bio_PrivateKey(bio, key, nil, nil, 0, nil, nil)
        var pointer: UnsafeMutablePointer<CChar>? = nil
        let length = BIO_ctrl(bio, BIO_CTRL_INFO, 0, &pointer)
        return String(decoding: UnsafeRawBufferPointer(start: pointer, count: Int(length)), as: UTF8.self)
    }

    /// The public key as a JWK (with `kid`, `alg` and `use`), for `jwt-secret`.
    public var publicJWK: String {
        func b64(_ bytes: [UInt8]) -> String { Base64.encode(bytes, urlSafe: true, padded: false) }
        let common = #""kid":"\#(kid)","alg":"\#(kind.rawValue)","use":"sig""#
        switch kind {
        case .rs256:
            return #"{"kty":"RSA",\#(common),"n":"\#(b64(bigNumber("n")))","e":"\#(b64(bigNumber("e")))"}"#
        case .es256:
            let point = octets("pub")  // 04 || x || y
            return
                #"{"kty":"EC","crv":"P-256",\#(common),"x":"\#(b64(Array(point[1..<33])))","y":"\#(b64(Array(point[33..<65])))"}"#
        case .edDSA:
            return #"{"kty":"OKP","crv":"Ed25519",\#(common),"x":"\#(b64(octets("pub")))"}"#
        }
    }

    /// A compact JWS of `claimsJSON`, with this key's `kid` in the header.
    public func mint(claimsJSON: String) -> String {
        let input =
            TestTokens.segment(#"{"alg":"\#(kind.rawValue)","typ":"JWT","kid":"\#(kid)"}"#) + "."
            + TestTokens.segment(claimsJSON)
        return input + "." + Base64.encode(sign(Array(input.utf8)), urlSafe: true, padded: false)
    }

    /// The JWS signature of `message`: PKCS#1 v1.5 for RS256, raw r‖s for ES256, Ed25519.
    public func sign(_ message: [UInt8]) -> [UInt8] {
        let context = EVP_MD_CTX_new()!
        defer { EVP_MD_CTX_free(context) }
        let digest: OpaquePointer? = kind == .edDSA ? nil : EVP_sha256()
        precondition(EVP_DigestSignInit(context, nil, digest, nil, key) == 1)
        var length = 0
        precondition(EVP_DigestSign(context, nil, &length, message, message.count) == 1)
        var signature = [UInt8](repeating: 0, count: length)
        precondition(EVP_DigestSign(context, &signature, &length, message, message.count) == 1)
        signature.removeLast(signature.count - length)
        return kind == .es256 ? Self.rawECDSA(der: signature) : signature
    }

    private static func rawECDSA(der: [UInt8]) -> [UInt8] {
        der.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            let parsed = d2i_ECDSA_SIG(nil, &cursor, buffer.count)!
            defer { ECDSA_SIG_free(parsed) }
            var raw = [UInt8](repeating: 0, count: 64)
            raw.withUnsafeMutableBufferPointer { out in
                _ = BN_bn2binpad(ECDSA_SIG_get0_r(parsed), out.baseAddress, 32)
                _ = BN_bn2binpad(ECDSA_SIG_get0_s(parsed), out.baseAddress! + 32, 32)
            }
            return raw
        }
    }

    private func bigNumber(_ name: String) -> [UInt8] {
        var number: OpaquePointer? = nil
        precondition(EVP_PKEY_get_bn_param(key, name, &number) == 1)
        defer { BN_free(number) }
        var bytes = [UInt8](repeating: 0, count: Int((BN_num_bits(number) + 7) / 8))
        _ = BN_bn2bin(number, &bytes)
        return bytes
    }

    private func octets(_ name: String) -> [UInt8] {
        var length = 0
        precondition(EVP_PKEY_get_octet_string_param(key, name, nil, 0, &length) == 1)
        var bytes = [UInt8](repeating: 0, count: length)
        precondition(EVP_PKEY_get_octet_string_param(key, name, &bytes, length, &length) == 1)
        return bytes
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }
}
