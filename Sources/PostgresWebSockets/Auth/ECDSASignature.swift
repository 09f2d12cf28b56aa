/// JWS carries an ECDSA signature as r || s, each left-padded to the curve's size (RFC 7518 3.4);
/// libcrypto verifies the DER form, a SEQUENCE of two INTEGERs (RFC 3279 2.2.3).
enum ECDSASignature {
    /// The DER form of a raw signature whose halves are r and s. Minimal encoding: libcrypto
    /// refuses a signature whose DER does not re-encode to the same bytes.
    static func der(fromRaw raw: [UInt8]) -> [UInt8] {
        let half = raw.count / 2
        var body: [UInt8] = []
        body.reserveCapacity(raw.count + 6)
        appendInteger(raw[..<half], to: &body)
        appendInteger(raw[half...], to: &body)
        var out: [UInt8] = [0x30]
        out.reserveCapacity(body.count + 3)
        appendLength(body.count, to: &out)
        out.append(contentsOf: body)
        return out
    }

    /// An unsigned big-endian number as a DER INTEGER: no leading zero bytes, except one
    /// that keeps a set top bit from reading as a negative number.
    private static func appendInteger(_ bytes: ArraySlice<UInt8>, to out: inout [UInt8]) {
        let magnitude = bytes.drop(while: { $0 == 0 })
        let needsZero = magnitude.first.map { $0 >= 0x80 } ?? true
        out.append(0x02)
        appendLength(magnitude.count + (needsZero ? 1 : 0), to: &out)
        if needsZero { out.append(0) }
        out.append(contentsOf: magnitude)
    }

    /// Lengths stay under 256: P-521's r and s are at most 67 content bytes each.
    private static func appendLength(_ length: Int, to out: inout [UInt8]) {
        if length >= 0x80 { out.append(0x81) }
        out.append(UInt8(length))
    }
}
