import COpenSSL

/// One-shot message digests from the system's libcrypto.
enum Digest {
    static func sha1(_ input: [UInt8]) -> [UInt8] { digest(input, EVP_sha1()) }

    static func sha256(_ input: [UInt8]) -> [UInt8] { digest(input, EVP_sha256()) }

    private static func digest(_ input: [UInt8], _ type: OpaquePointer?) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = EVP_Digest(input, input.count, &output, &length, type, nil)
        precondition(ok == 1, "libcrypto digest failed")
        output.removeLast(output.count - Int(length))
        return output
    }
}
