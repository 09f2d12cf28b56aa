@testable import PostgresWebSockets

/// Base64 and base64url (JWT segments, secrets, the WebSocket key).
///
/// Properties:
/// - every text `decode` accepts is the one spelling of its bytes: encoding them again (in the
///   alphabet the text used, padded when it was) gives the text back;
/// - `decodeURLSafe` accepts exactly the texts `decode` accepts that have no `+`, `/` or `=`;
/// - the input's bytes, encoded in each of the four forms, decode to themselves.
enum Base64Target {
    static let target = FuzzTarget(name: "base64", summary: "Base64 and base64url decode/encode", run: run)

    static func run(_ data: UnsafeRawBufferPointer) {
        let text = Array(data)
        let decoded = Base64.decode(text)
        if let decoded {
            let padded = text.last == UInt8(ascii: "=")
            // Written in the standard alphabet: the encoder writes one alphabet at a time.
            let standard = text.map {
                $0 == UInt8(ascii: "-") ? UInt8(ascii: "+") : $0 == UInt8(ascii: "_") ? UInt8(ascii: "/") : $0
            }
            let again = Array(Base64.encode(decoded, urlSafe: false, padded: padded).utf8)
            expect(
                again == standard, "\(describe(text)) decodes but is not the spelling of its bytes (\(describe(again)))"
            )
        }
        let urlSafe = Base64.decodeURLSafe(text)
        let plain = !text.contains { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "=") }
        expect(urlSafe == (plain ? decoded : nil), "decodeURLSafe and decode disagree on \(describe(text))")

        for (urlSafe, padded) in [(false, false), (false, true), (true, false), (true, true)] {
            let encoded = Base64.encode(text, urlSafe: urlSafe, padded: padded)
            expect(
                Base64.decode(encoded) == text, "encode(urlSafe: \(urlSafe), padded: \(padded)) does not decode back")
            if urlSafe, !padded {
                expect(Base64.decodeURLSafe(encoded.utf8) == text, "a JWT segment does not decode back")
            }
        }
    }

    static func describe(_ bytes: [UInt8]) -> String {
        String(decoding: bytes.prefix(200), as: UTF8.self).debugEscaped
    }
}
