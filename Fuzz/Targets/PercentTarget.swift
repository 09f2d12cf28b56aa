@testable import PostgresWebSockets

/// Percent-decoding of URL path segments (channel names, tokens, static file paths).
///
/// Properties:
/// - a text decodes exactly when each `%` in it is followed by two hex digits, and then to
///   what a byte-by-byte reading of RFC 3986 gives;
/// - decoding then encoding (every byte but the unreserved ones escaped) then decoding again
///   gives the same bytes, and encoding the input's bytes then decoding gives them back;
/// - encoding is canonical: decoding an encoded text and encoding it again changes nothing.
enum PercentTarget {
    static let target = FuzzTarget(name: "percent", summary: "percentDecode of path segments", run: run)

    static func run(_ data: UnsafeRawBufferPointer) {
        let bytes = Array(data)
        // A Substring holds valid UTF-8 only: invalid input reaches the server as repaired text.
        let text = String(decoding: bytes, as: UTF8.self)
        let utf8 = Array(text.utf8)
        let decoded = percentDecode(text[...])
        expect(decoded == reference(utf8), "percentDecode(\(text.debugEscaped)) is not RFC 3986's reading")
        if let decoded {
            let encoded = percentEncode(decoded)
            expect(percentDecode(encoded[...]) == decoded, "decode, encode, decode changed \(text.debugEscaped)")
            expect(percentEncode(percentDecode(encoded[...]) ?? []) == encoded, "encoding is not canonical")
        }
        expect(percentDecode(percentEncode(bytes)[...]) == bytes, "encoding the input does not decode back")
    }

    /// RFC 3986 2.1, read the slow way.
    static func reference(_ text: [UInt8]) -> [UInt8]? {
        var out: [UInt8] = []
        var index = 0
        while index < text.count {
            if text[index] != UInt8(ascii: "%") {
                out.append(text[index])
                index += 1
                continue
            }
            guard index + 2 < text.count,
                let value = UInt8(String(decoding: text[(index + 1)...(index + 2)], as: UTF8.self), radix: 16),
                text[(index + 1)...(index + 2)].allSatisfy(isHexDigit)
            else { return nil }
            out.append(value)
            index += 3
        }
        return out
    }

    static func isHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
            || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte)
    }

    /// What `encodeURIComponent` does for unreserved characters (RFC 3986 2.3); every other
    /// byte is escaped with upper-case digits.
    static func percentEncode(_ bytes: [UInt8]) -> String {
        var out = ""
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%" + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]], as: UTF8.self)
            }
        }
        return out
    }
}
