/// The request line and headers of an HTTP/1.x request, parsed strictly.
///
/// The server only ever reads one request per connection, a GET without a body, and needs a
/// handful of its headers; a small parser that checks every byte against RFC 9112 costs a
/// handshake far less than a general HTTP decoder with a `String` per header.
struct RequestHead {
    var method: Substring
    /// The request target as sent (origin form: path and optional query).
    var target: Substring
    var minorVersion: Int
    var headers: [(name: Substring, value: Substring)]

    /// The path of the target, without the query.
    var path: Substring {
        target.firstIndex(ofByte: UInt8(ascii: "?")).map { target[..<$0] } ?? target
    }

    /// The values of every field named `name` (lowercase), in order.
    func values(_ name: String) -> [Substring] {
        headers.compactMap { Self.equalsIgnoringCase($0.name, name) ? $0.value : nil }
    }

    func first(_ name: String) -> Substring? {
        headers.first { Self.equalsIgnoringCase($0.name, name) }?.value
    }

    /// The elements of every comma-separated field named `name`, trimmed, empty ones dropped.
    func listValues(_ name: String) -> [Substring] {
        values(name).flatMap {
            $0.split(byte: UInt8(ascii: ","), omittingEmpty: true).map { $0.trimming() }.filter { !$0.isEmpty }
        }
    }

    /// Whether a comma-separated field (Connection, Upgrade) lists `token` (lowercase).
    func hasToken(_ name: String, _ token: String) -> Bool {
        for header in headers where Self.equalsIgnoringCase(header.name, name) {
            var rest = header.value[...]
            while !rest.isEmpty {
                let comma = rest.firstIndex(of: ",") ?? rest.endIndex
                if Self.equalsIgnoringCase(rest[..<comma].trimming(), token) { return true }
                rest = comma == rest.endIndex ? rest[comma...] : rest[rest.index(after: comma)...]
            }
        }
        return false
    }

    static func equalsIgnoringCase(_ text: Substring, _ lowercase: String) -> Bool {
        text.utf8.count == lowercase.utf8.count
            && zip(text.utf8, lowercase.utf8).allSatisfy { a, b in
                a == b || (a >= UInt8(ascii: "A") && a <= UInt8(ascii: "Z") && a | 0x20 == b)
            }
    }

    static let maxHeaderCount = 100

    /// Checks the bytes of a head as they arrive: every line ends in CRLF, and no control
    /// character but HTAB appears. Keeps the last byte, so reads may split anywhere.
    struct ByteChecker {
        private var previous: UInt8 = 0

        /// The problem with the next bytes, or nil while they may still form a request head.
        mutating func check(_ bytes: some Sequence<UInt8>) -> String? {
            for byte in bytes {
                if byte == UInt8(ascii: "\n") {
                    guard previous == UInt8(ascii: "\r") else { return "bare LF" }
                } else if previous == UInt8(ascii: "\r") {
                    return "bare CR"
                } else if (byte < 0x20 && byte != UInt8(ascii: "\t") && byte != UInt8(ascii: "\r")) || byte == 0x7F {
                    return "control character in request"
                }
                previous = byte
            }
            return nil
        }
    }

    /// Parses `bytes`: the request head up to and including its terminating empty line.
    static func parse(_ bytes: UnsafeRawBufferPointer) throws(Refusal) -> RequestHead {
        var checker = ByteChecker()
        if let problem = checker.check(bytes) { throw Refusal(.badRequest, problem) }
        let text = String(decoding: bytes, as: UTF8.self)
        // Every LF follows a CR (the checker saw to it): lines end at LF, their CR dropped.
        var lines = text[...].split(byte: UInt8(ascii: "\n"), omittingEmpty: true)
            .map { $0.trimming { $0 == UInt8(ascii: "\r") } }.filter { !$0.isEmpty }[...]
        guard let requestLine = lines.popFirst() else {
            throw Refusal(.badRequest, "empty request")
        }
        let parts = requestLine.split(byte: UInt8(ascii: " "), omittingEmpty: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].utf8.allSatisfy(isTokenCharacter) else {
            throw Refusal(.badRequest, "malformed request line")
        }
        guard parts[1].hasPrefix("/"), parts[1].utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw Refusal(.badRequest, "malformed request target")
        }
        let minorVersion: Int
        switch parts[2] {
        case "HTTP/1.1": minorVersion = 1
        case "HTTP/1.0": minorVersion = 0
        default: throw Refusal(.badRequest, "unsupported HTTP version")
        }
        var headers: [(name: Substring, value: Substring)] = []
        headers.reserveCapacity(12)
        for line in lines {
            guard headers.count < maxHeaderCount else {
                throw Refusal(.headTooLarge, "too many header fields")
            }
            guard let colon = line.firstIndex(ofByte: UInt8(ascii: ":")) else {
                throw Refusal(.badRequest, "malformed header field")
            }
            let name = line[..<colon]
            // A name must be a token: no whitespace before the colon, no obsolete line folding.
            guard !name.isEmpty, name.utf8.allSatisfy(isTokenCharacter) else {
                throw Refusal(.badRequest, "malformed header field")
            }
            headers.append((name, line[line.utf8.index(after: colon)...].trimming()))
        }
        return RequestHead(method: parts[0], target: parts[1], minorVersion: minorVersion, headers: headers)
    }

    /// RFC 9110 tchar.
    private static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            true
        default:
            false
        }
    }
}
