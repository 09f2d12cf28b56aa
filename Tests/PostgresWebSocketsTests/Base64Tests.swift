import Testing

@testable import PostgresWebSockets

/// RFC 4648 section 10 test vectors.
private let rfc4648: [(plain: String, encoded: String)] = [
    ("", ""),
    ("f", "Zg=="),
    ("fo", "Zm8="),
    ("foo", "Zm9v"),
    ("foob", "Zm9vYg=="),
    ("fooba", "Zm9vYmE="),
    ("foobar", "Zm9vYmFy"),
]

@Suite("Base64")
struct Base64Tests {
    @Test("encode matches the RFC 4648 vectors, padded and unpadded")
    func rfcEncode() {
        for (plain, encoded) in rfc4648 {
            #expect(Base64.encode(Array(plain.utf8)) == encoded)
            #expect(Base64.encode(Array(plain.utf8), urlSafe: true) == encoded)
            let unpadded = String(encoded.prefix(while: { $0 != "=" }))
            #expect(Base64.encode(Array(plain.utf8), padded: false) == unpadded)
            #expect(Base64.encode(Array(plain.utf8), urlSafe: true, padded: false) == unpadded)
        }
    }

    @Test("decode accepts the RFC 4648 vectors, padded and unpadded")
    func rfcDecode() {
        for (plain, encoded) in rfc4648 {
            #expect(Base64.decode(encoded) == Array(plain.utf8))
            #expect(Base64.decode(String(encoded.prefix(while: { $0 != "=" }))) == Array(plain.utf8))
        }
    }

    @Test("the two alphabets differ only in the last two characters")
    func alphabets() {
        let bytes: [UInt8] = [0xFB, 0xFF, 0xBF, 0xFE]
        #expect(Base64.encode(bytes) == "+/+//g==")
        #expect(Base64.encode(bytes, urlSafe: true) == "-_-__g==")
        #expect(Base64.encode(bytes, urlSafe: true, padded: false) == "-_-__g")
        #expect(Base64.decode("+/+//g==") == bytes)
        #expect(Base64.decode("-_-__g") == bytes)
        #expect(Base64.decode("-_-__g==") == bytes)
        #expect(Base64.decode("+/+//g") == bytes)
    }

    @Test("the WebSocket accept key of RFC 6455 section 1.3 encodes as expected")
    func webSocketAcceptExample() {
        // SHA-1 of "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11".
        let digest: [UInt8] = [
            0xb3, 0x7a, 0x4f, 0x2c, 0xc0, 0x62, 0x4f, 0x16, 0x90, 0xf6,
            0x46, 0x06, 0xcf, 0x38, 0x59, 0x45, 0xb2, 0xbe, 0xc4, 0xea,
        ]
        #expect(Base64.encode(digest) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test("every length and every byte value round-trips in both alphabets")
    func roundTrips() {
        let all = (0...255).map { UInt8($0) }
        for length in 0...all.count {
            let bytes = Array(all.prefix(length).reversed())
            for urlSafe in [false, true] {
                for padded in [false, true] {
                    let text = Base64.encode(bytes, urlSafe: urlSafe, padded: padded)
                    #expect(Base64.decode(text) == bytes, "length \(length) urlSafe \(urlSafe) padded \(padded)")
                }
            }
        }
    }

    @Test(
        "bytes outside both alphabets are rejected",
        arguments: [
            "Zm9v!", "Zm 9v", "Zm9v\n", "Zm9v\0", "Z.9v", "Zm9*", "Zm9v\u{E9}", "====", "Zg=a", "Zg==Zg==", "Z===",
            "m9vYg==",
        ])
    func invalidBytes(text: String) {
        #expect(Base64.decode(text) == nil)
    }

    @Test("impossible lengths and misplaced padding are rejected")
    func badLengthOrPadding() {
        #expect(Base64.decode("Z") == nil)
        #expect(Base64.decode("Zm9vY") == nil)
        #expect(Base64.decode("Zg=") == nil)
        #expect(Base64.decode("Zg===") == nil)
        #expect(Base64.decode("Zm8==") == nil)
        #expect(Base64.decode("=") == nil)
    }

    @Test("non-zero trailing bits are rejected, so every byte string has one spelling")
    func trailingBits() {
        #expect(Base64.decode("Zg==") == [0x66])
        #expect(Base64.decode("Zh==") == nil)
        #expect(Base64.decode("Zh") == nil)
        #expect(Base64.decode("Zm8=") == [0x66, 0x6F])
        #expect(Base64.decode("Zm9=") == nil)
        #expect(Base64.decode("Zm9") == nil)
        // Of the 16 spellings of a one-byte tail only the one with zero bits decodes.
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        #expect(alphabet.filter { Base64.decode("Z" + String($0)) != nil } == ["A", "Q", "g", "w"])
        #expect(alphabet.filter { Base64.decode("Zm" + String($0)) != nil }.count == 16)
    }

    @Test("decode works on any collection of bytes, such as a slice")
    func decodeSlice() {
        let bytes = Array("xxZm9vYmFyxx".utf8)
        #expect(Base64.decode(bytes[2..<10]) == Array("foobar".utf8))
    }
}
