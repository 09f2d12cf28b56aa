import Foundation

@testable import PostgresWebSockets

/// The JSON parser (tokens, JWKS documents, `pgws.v1` frames) against Foundation's
/// `JSONSerialization`, and against its own writer.
///
/// Properties:
/// - a document with a NUL byte is refused (RFC 8259 8.1: UTF-8 only; Foundation guesses
///   UTF-16 or UTF-32 from NUL bytes, so it is not asked);
/// - both accept the same documents, and read the same values from them (strings scalar for
///   scalar, numbers as doubles, objects member for member), except where ours refuses on
///   purpose: duplicate keys (two parsers must not read two `mode` claims differently;
///   Foundation keeps the last), nesting deeper than `maxDepth` (32; Foundation allows 512) and
///   a leading byte order mark (RFC 8259 8.1 lets a parser refuse it; Foundation skips it), and
///   a comma before `}` or `]` (RFC 8259 has none; Foundation takes it); and
///   where Foundation refuses on purpose: a number beyond a Double's range (ours keeps numbers
///   as text, so claims are echoed exactly); and where Foundation drops a U+FEFF right after an
///   escape inside a string (seeds `bom-after-escape*`);
/// - an error's offset lies inside the document;
/// - what the writer makes of a parsed value parses back to the same value, and the writer
///   writes that again byte for byte; Foundation accepts it.
enum JSONTarget {
    static let target = FuzzTarget(
        name: "json", summary: "JSONParser against JSONSerialization and JSONWriter", run: run)

    static func run(_ data: UnsafeRawBufferPointer) {
        let bytes = Array(data)
        let ours: Result<JSONValue, JSONParser.Error>
        do throws(JSONParser.Error) {
            ours = .success(try JSONParser.parse(bytes))
        } catch {
            ours = .failure(error)
        }
        // A NUL byte is never valid JSON in UTF-8, but makes Foundation read UTF-16 or UTF-32.
        if bytes.contains(0) {
            expect(!isSuccess(ours), "accepted a document with a NUL byte")
            return
        }
        let theirs = try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])

        switch (ours, theirs) {
        case (.success(let value), let theirs?):
            expect(same(value, theirs), "values differ: ours \(value.serialized.debugEscaped), Foundation \(theirs)")
        case (.success(let value), nil):
            expect(hasNumberBeyondDouble(value), "Foundation refuses what we accept: \(value.serialized.debugEscaped)")
        case (.failure(let error), _?):
            expect(
                error.message == "duplicate key" || error.message == "nesting too deep"
                    || bytes.starts(with: [0xEF, 0xBB, 0xBF]) || isTrailingComma(bytes, at: error.offset),
                "we refuse what Foundation accepts: \(error)")
        case (.failure, nil):
            break
        }
        if case .failure(let error) = ours {
            expect(
                error.offset >= 0 && error.offset <= bytes.count, "error offset \(error.offset) outside the document")
        }
        guard case .success(let value) = ours else { return }

        var writer = JSONWriter()
        writer.value(value)
        let written = writer.bytes
        guard let reparsed = try? JSONParser.parse(written) else {
            return expect(false, "our own output does not parse: \(value.serialized.debugEscaped)")
        }
        var again = JSONWriter()
        again.value(reparsed)
        expect(again.bytes == written, "writing is not stable: \(value.serialized.debugEscaped)")
        expect(
            (try? JSONSerialization.jsonObject(with: Data(written), options: [.fragmentsAllowed])) != nil
                || hasNumberBeyondDouble(value),
            "Foundation refuses our output \(value.serialized.debugEscaped)")
    }

    /// Whether Foundation's reading of a document is ours.
    static func same(_ ours: JSONValue, _ theirs: Any) -> Bool {
        switch ours {
        case .null:
            return theirs is NSNull
        case .bool(let value):
            guard let number = theirs as? NSNumber, isBoolean(number) else { return false }
            return number.boolValue == value
        case .number(let text):
            guard let number = theirs as? NSNumber, !isBoolean(number), let mine = Double(text) else { return false }
            let other = number.doubleValue
            return mine == other || abs(mine - other) <= 1e-9 * max(abs(mine), abs(other))
        case .string(let text):
            guard let other = theirs as? String else { return false }
            return text.unicodeScalars.elementsEqual(other.unicodeScalars)
                || withoutByteOrderMarks(text) == withoutByteOrderMarks(other)
        case .array(let elements):
            guard let others = theirs as? [Any], others.count == elements.count else { return false }
            return zip(elements, others).allSatisfy { same($0, $1) }
        case .object(let members):
            guard let others = theirs as? [String: Any], others.count == members.count else { return false }
            let byKey = Dictionary(others.map { (withoutByteOrderMarks($0.key), $0.value) }) { first, _ in first }
            return members.allSatisfy { member in
                (others[member.key] ?? byKey[withoutByteOrderMarks(member.key)]).map { same(member.value, $0) } ?? false
            }
        }
    }

    /// Foundation decodes the raw run after an escape on its own and drops a U+FEFF that opens
    /// it, as if it were a byte order mark; ours keeps every scalar of a string or key.
    static func withoutByteOrderMarks(_ text: String) -> [Unicode.Scalar] {
        text.unicodeScalars.filter { $0 != "\u{FEFF}" }
    }

    static func isSuccess(_ result: Result<JSONValue, JSONParser.Error>) -> Bool {
        if case .success = result { true } else { false }
    }

    /// Whether the refusal at `offset` is of a `}` or `]` that follows a comma.
    static func isTrailingComma(_ bytes: [UInt8], at offset: Int) -> Bool {
        guard offset < bytes.count, bytes[offset] == UInt8(ascii: "}") || bytes[offset] == UInt8(ascii: "]") else {
            return false
        }
        let before = bytes[..<offset].last { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }
        return before == UInt8(ascii: ",")
    }

    static func hasNumberBeyondDouble(_ value: JSONValue) -> Bool {
        switch value {
        case .null, .bool, .string: false
        case .number(let text): !(Double(text)?.isFinite ?? false)
        case .array(let elements): elements.contains(where: hasNumberBeyondDouble)
        case .object(let members): members.contains { hasNumberBeyondDouble($0.value) }
        }
    }

    private static func isBoolean(_ number: NSNumber) -> Bool {
        String(cString: number.objCType) == "c"
    }
}
