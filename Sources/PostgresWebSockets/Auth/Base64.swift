/// Base64 for JWT segments (base64url, unpadded), HMAC secrets (either alphabet) and the
/// WebSocket accept key (standard, padded). Decoding rejects any byte outside the alphabet.
public enum Base64 {
    private static let standardAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let urlAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// 0...63 for alphabet bytes of either variant, 0xFF for anything else.
    private static let decodeTable: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, byte) in standardAlphabet.enumerated() { table[Int(byte)] = UInt8(i) }
        table[Int(UInt8(ascii: "-"))] = 62
        table[Int(UInt8(ascii: "_"))] = 63
        return table
    }()

    public static func encode(_ bytes: some Collection<UInt8>, urlSafe: Bool = false, padded: Bool = true) -> String {
        let alphabet = urlSafe ? urlAlphabet : standardAlphabet
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var iterator = bytes.makeIterator()
        while let b0 = iterator.next() {
            let b1 = iterator.next()
            let b2 = iterator.next()
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 0x03) << 4 | (b1 ?? 0) >> 4)])
            if let b1 {
                out.append(alphabet[Int((b1 & 0x0F) << 2 | (b2 ?? 0) >> 6)])
            } else if padded {
                out.append(UInt8(ascii: "="))
            }
            if let b2 {
                out.append(alphabet[Int(b2 & 0x3F)])
            } else if padded {
                out.append(UInt8(ascii: "="))
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes base64 or base64url, padded or not. Returns nil on any invalid byte,
    /// impossible length or non-zero trailing bits.
    public static func decode(_ text: some BidirectionalCollection<UInt8>) -> [UInt8]? {
        var count = text.count
        if count % 4 == 0, count > 0 {
            // Up to two '=' of padding end the text; they carry no bits.
            var padding = 0
            for byte in text.reversed().prefix(2) where byte == UInt8(ascii: "=") { padding += 1 }
            if padding == 1, text.reversed().first != UInt8(ascii: "=") { padding = 0 }
            count -= padding
        }
        if count % 4 == 1 { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        for byte in text.prefix(count) {
            let value = decodeTable[Int(byte)]
            if value == 0xFF { return nil }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        // Leftover bits must be zero, otherwise two texts would decode to the same bytes.
        if bits > 0, accumulator & ((1 << UInt32(bits)) - 1) != 0 { return nil }
        return out
    }

    /// Decodes unpadded base64url only, as JWS compact serialization requires (RFC 7515 2),
    /// so a token has exactly one spelling.
    public static func decodeURLSafe(_ text: some BidirectionalCollection<UInt8>) -> [UInt8]? {
        for byte in text where byte == UInt8(ascii: "+") || byte == UInt8(ascii: "/") || byte == UInt8(ascii: "=") {
            return nil
        }
        return decode(text)
    }

    public static func decode(_ text: String) -> [UInt8]? {
        decode(text.utf8)
    }
}
