import Testing

@testable import PostgresWebSockets

/// The parser's error message for `bytes`, or nil when they parse.
private func failure(_ bytes: [UInt8]) -> String? {
    do {
        _ = try JSONParser.parse(bytes)
        return nil
    } catch {
        return error.message
    }
}

private func failure(_ text: String) -> String? {
    failure(Array(text.utf8))
}

private func nestedArrays(_ depth: Int) -> String {
    String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
}

@Suite("JSONParser")
struct JSONParserTests {
    // MARK: round trips

    @Test(
        "compact documents survive parse + serialize byte for byte",
        arguments: [
            #"{"b":1,"a":[12345678901234567890,1e400,-0.5E-3,0,-0,3.14159265358979323846264338327950288],"c":{}}"#,
            #"{"z":true,"y":false,"x":null,"w":"text","v":[],"u":[[],{}]}"#,
            #"[1E+2,1e-2,-1.0e0,100000000000000000000000000000000000001]"#,
            #""caf\#u{E9} \#u{2615} \#u{1F600}""#,
            "12345678901234567890",
            "null",
        ])
    func roundTrip(text: String) throws {
        #expect(try JSONParser.parse(text).serialized == text)
    }

    @Test("member order is kept, not sorted")
    func memberOrder() throws {
        let value = try JSONParser.parse(#"{"zeta":1,"alpha":2,"mid":3}"#)
        guard case .object(let members) = value else {
            Issue.record("not an object: \(value)")
            return
        }
        #expect(members.map(\.key) == ["zeta", "alpha", "mid"])
    }

    @Test("numbers keep their source text")
    func numberText() throws {
        #expect(try JSONParser.parse("12345678901234567890") == .number("12345678901234567890"))
        #expect(try JSONParser.parse("1e400") == .number("1e400"))
        #expect(try JSONParser.parse("-0.000") == .number("-0.000"))
        #expect(try JSONParser.parse("1.50") == .number("1.50"))
        #expect(try JSONParser.parse("1.50").doubleValue == 1.5)
        #expect(try JSONParser.parse(#""1""#).doubleValue == nil)
    }

    @Test("whitespace between tokens is dropped on output")
    func whitespace() throws {
        let value = try JSONParser.parse(" \t\r\n{ \"a\" : [ 1 , 2 ] ,\n\"b\":\"x y\" } \n")
        #expect(value.serialized == #"{"a":[1,2],"b":"x y"}"#)
    }

    @Test("subscript finds members of objects only")
    func subscriptLookup() throws {
        let value = try JSONParser.parse(#"{"a":"x","b":[1]}"#)
        #expect(value["a"] == .string("x"))
        #expect(value["b"] == .array([.number("1")]))
        #expect(value["c"] == nil)
        #expect(try JSONParser.parse(#"["a"]"#)["a"] == nil)
        #expect(value["a"]?.stringValue == "x")
        #expect(value["b"]?.stringValue == nil)
    }

    @Test("object equality depends on member order")
    func orderedEquality() throws {
        #expect(try JSONParser.parse(#"{"a":1,"b":2}"#) != JSONParser.parse(#"{"b":2,"a":1}"#))
        #expect(try JSONParser.parse(#"{"a":1,"b":2}"#) == JSONParser.parse(#"{ "a":1, "b":2 }"#))
        #expect(try JSONParser.parse("1.0") != JSONParser.parse("1"))
    }

    // MARK: strictness

    @Test("duplicate keys are rejected, also when spelled with escapes or nested")
    func duplicateKeys() {
        #expect(failure(#"{"a":1,"a":2}"#) == "duplicate key")
        #expect(failure(#"{"mode":"r","mode":"rw"}"#) == "duplicate key")
        #expect(failure(#"{"a":1,"\u0061":2}"#) == "duplicate key")
        #expect(failure(#"{"x":{"a":1,"b":2,"a":3}}"#) == "duplicate key")
        #expect(failure(#"[{"a":1},{"a":2}]"#) == nil)
    }

    @Test("32 nested arrays or objects parse, 33 are rejected")
    func depthLimit() throws {
        #expect(JSONParser.defaultMaxDepth == 32)
        #expect(failure(nestedArrays(32)) == nil)
        #expect(failure(nestedArrays(33)) == "nesting too deep")
        #expect(failure(nestedArrays(100_000)) == "nesting too deep")
        let objects32 = String(repeating: #"{"a":"#, count: 31) + "{}" + String(repeating: "}", count: 31)
        let objects33 = String(repeating: #"{"a":"#, count: 32) + "{}" + String(repeating: "}", count: 32)
        #expect(failure(objects32) == nil)
        #expect(failure(objects33) == "nesting too deep")
        #expect(failure(#"{"a":"# + nestedArrays(32) + "}") == "nesting too deep")
        #expect(throws: JSONParser.Error.self) { try JSONParser.parse(nestedArrays(3), maxDepth: 2) }
        #expect(try JSONParser.parse(nestedArrays(3), maxDepth: 3) == .array([.array([.array([])])]))
    }

    @Test("lone surrogates are rejected, surrogate pairs are decoded")
    func surrogates() throws {
        for text in [
            #""\uD800""#, #""\uDC00""#, #""\uDFFF""#, #""\uD800\u0041""#, #""\uD800x""#, #""\uD800\uD800""#,
            #""\uDE00\uD83D""#,
        ] {
            #expect(failure(text) == "lone surrogate", "\(text)")
        }
        #expect(try JSONParser.parse(#""\uD83D\uDE00""#) == .string("\u{1F600}"))
        #expect(try JSONParser.parse(#""\ud83d\ude00""#) == .string("\u{1F600}"))
    }

    @Test(
        "invalid UTF-8 inside strings is rejected",
        arguments: [
            [0xC3] as [UInt8],  // truncated sequence
            [0xFF],  // never valid
            [0xC0, 0xAF],  // overlong "/"
            [0xED, 0xA0, 0x80],  // encoded surrogate U+D800
            [0xF4, 0x90, 0x80, 0x80],  // above U+10FFFF
            [0x80],  // lone continuation byte
            [0x61, 0xE2, 0x82],  // cut in the middle
        ])
    func invalidUTF8(bytes: [UInt8]) {
        #expect(failure([0x22] + bytes + [0x22]) == "invalid UTF-8 in string")
        #expect(failure(Array(#"{"k":""#.utf8) + bytes + Array(#"x"}"#.utf8)) == "invalid UTF-8 in string")
    }

    @Test("valid multi-byte UTF-8 is kept as is")
    func validUTF8() throws {
        #expect(try JSONParser.parse([0x22, 0xC3, 0xA9, 0xF0, 0x9F, 0x98, 0x80, 0x22]) == .string("\u{E9}\u{1F600}"))
    }

    @Test("escapes are decoded")
    func escapes() throws {
        let value = try JSONParser.parse(#""\"\\\/\b\f\n\r\t\u0041\u00e9\u2615\u0000x""#)
        #expect(value == .string("\"\\/\u{8}\u{C}\n\r\tA\u{E9}\u{2615}\u{0}x"))
    }

    @Test("bad escapes and raw control characters are rejected")
    func badEscapes() {
        #expect(failure(#""\x""#) == "invalid escape")
        #expect(failure(#""\'""#) == "invalid escape")
        #expect(failure(#""\u12""#) == "invalid \\u escape")
        #expect(failure(#""\u12G4""#) == "invalid \\u escape")
        #expect(failure("\"\\") == "unterminated escape")
        #expect(failure("\"a\nb\"") == "control character in string")
        #expect(failure("\"a\tb\"") == "control character in string")
        #expect(failure("\"\u{0}\"") == "control character in string")
        #expect(failure("\"abc") == "unterminated string")
    }

    @Test(
        "malformed numbers are rejected",
        arguments: [
            "-", "+1", ".5", "1.", "1e", "1e+", "01", "-01", "0x10", "NaN", "Infinity", "-Infinity", "1_000", "--1",
        ])
    func badNumbers(text: String) {
        #expect(failure(text) != nil)
        #expect(failure("[\(text)]") != nil)
    }

    @Test("malformed documents are rejected with the right message")
    func malformedDocuments() {
        #expect(failure("") == "unexpected end of input")
        #expect(failure("   ") == "unexpected end of input")
        #expect(failure("{} x") == "trailing characters")
        #expect(failure("{}{}") == "trailing characters")
        #expect(failure("[1,]") == "unexpected character")
        #expect(failure("[1 2]") == "expected ',' or ']'")
        #expect(failure(#"{"a":1,}"#) == "expected a key")
        #expect(failure(#"{"a" 1}"#) == "expected ':'")
        #expect(failure(#"{"a":1 "b":2}"#) == "expected ',' or '}'")
        #expect(failure("{a:1}") == "expected a key")
        #expect(failure("tru") == "unexpected end of input")
        #expect(failure("trUe") == "invalid literal")
        #expect(failure("nul") == "unexpected end of input")
        #expect(failure("'a'") == "unexpected character")
        #expect(failure("[") == "unexpected end of input")
        #expect(failure(#"{"a":"#) == "unexpected end of input")
    }

    @Test("errors report the byte offset")
    func errorOffset() throws {
        let error = try #require(throws: JSONParser.Error.self) { try JSONParser.parse(#"{"a":1,"a":2}"#) }
        #expect(error.offset == 10)
        #expect(error.description == "duplicate key at byte 10")
    }
}

@Suite("JSONWriter")
struct JSONWriterTests {
    @Test("quotes, backslashes and control characters are escaped; other text is kept as is")
    func escaping() {
        let value = JSONValue.string("a\"b\\c/\u{1}\u{1F}\n\t\r\u{8}\u{C}\u{0}\u{7F}\u{E9}\u{1F600}")
        #expect(value.serialized == #""a\"b\\c/\u0001\u001f\n\t\r\u0008\u000c\u0000"# + "\u{7F}\u{E9}\u{1F600}\"")
    }

    @Test("every ASCII character written as a string parses back to itself")
    func everyASCII() throws {
        for scalar in (0..<0x80).map({ Unicode.Scalar(UInt8($0)) }) {
            let text = "<" + String(Character(scalar)) + ">"
            let written = JSONValue.string(text).serialized
            #expect(written.utf8.allSatisfy { $0 >= 0x20 }, "raw control character written for \(scalar.value)")
            #expect(try JSONParser.parse(written) == .string(text), "U+\(scalar.value)")
        }
    }

    @Test("the low-level writer builds documents from parts")
    func parts() {
        var writer = JSONWriter()
        writer.raw("[")
        writer.string("x\"y")
        writer.raw(",")
        writer.value(.object([("k", .array([.number("1e400"), .null, .bool(true), .bool(false)]))]))
        writer.raw(Array("]".utf8))
        #expect(String(decoding: writer.bytes, as: UTF8.self) == #"["x\"y",{"k":[1e400,null,true,false]}]"#)
    }

    @Test("object keys are escaped like strings")
    func keys() {
        let value = JSONValue.object([("a\"\n", .string("v"))])
        #expect(value.serialized == #"{"a\"\n":"v"}"#)
    }

    @Test("string(utf8:) writes raw bytes, escaping only what JSON requires")
    func rawBytes() {
        var writer = JSONWriter()
        let bytes: [UInt8] = [0x68, 0x22, 0x0A, 0xE2, 0x98, 0x95]
        bytes.withUnsafeBytes { writer.string(utf8: $0) }
        #expect(writer.bytes == [0x22, 0x68, 0x5C, 0x22, 0x5C, 0x6E, 0xE2, 0x98, 0x95, 0x22])
    }
}
