import NIOHTTP1
import Testing

@testable import PostgresWebSockets

@Suite("RequestHead")
struct RequestHeadTests {
    func parse(_ text: String) throws(Refusal) -> RequestHead {
        let result = Array(text.utf8).withUnsafeBytes { raw in
            Result { () throws(Refusal) in try RequestHead.parse(raw) }
        }
        return try result.get()
    }

    func status(of text: String) -> HTTPResponseStatus? {
        do {
            _ = try parse(text)
            return nil
        } catch {
            return error.status
        }
    }

    /// Separators are found by byte: as `Character`s, ":" or " " followed by a combining mark
    /// is one cluster, and the field or the request line was misread.
    @Test("a combining mark after a separator does not hide it")
    func combiningMarkAfterASeparator() throws {
        let head = try parse("GET /a?b HTTP/1.1\r\nX-Note:\u{301}v\r\n\r\n")
        #expect(head.path == "/a")
        #expect(head.first("x-note")?.unicodeScalars.elementsEqual("\u{301}v".unicodeScalars) == true)
        #expect(status(of: "GET /a \u{301}HTTP/1.1\r\nHost: h\r\n\r\n") == .badRequest)
    }

    @Test("a browser's handshake parses, fields looked up ignoring case")
    func browserHandshake() throws {
        let head = try parse(
            "GET /chat/abc.def.ghi?x=1 HTTP/1.1\r\nHost: example.com:3000\r\nUpgrade: websocket\r\n"
                + "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key:  dGhlIHNhbXBsZSBub25jZQ==  \r\n"
                + "Sec-WebSocket-Version: 13\r\nOrigin: http://localhost:3000\r\n\r\n")
        #expect(head.method == "GET")
        #expect(head.target == "/chat/abc.def.ghi?x=1")
        #expect(head.path == "/chat/abc.def.ghi")
        #expect(head.minorVersion == 1)
        #expect(head.first("sec-websocket-key") == "dGhlIHNhbXBsZSBub25jZQ==")
        #expect(head.values("sec-websocket-version") == ["13"])
        #expect(head.hasToken("connection", "upgrade"))
        #expect(head.hasToken("upgrade", "websocket"))
        #expect(!head.hasToken("connection", "close"))
        #expect(head.first("missing") == nil)
    }

    @Test("leading empty lines are ignored; HTTP/1.0 is read")
    func leniencies() throws {
        let head = try parse("\r\nGET / HTTP/1.0\r\n\r\n")
        #expect(head.minorVersion == 0)
        #expect(head.headers.isEmpty)
    }

    @Test(
        "malformed heads are 400",
        arguments: [
            "GET / HTTP/1.1\nHost: x\r\n\r\n",  // bare LF
            "GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n",  // bare CR
            "GET / HTTP/1.1\r\nHost: x\u{0}\r\n\r\n",  // NUL
            "GET / HTTP/1.1\r\nHost: x\u{7F}\r\n\r\n",  // DEL
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",  // space before the colon
            "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",  // obsolete line folding
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",  // two spaces
            "GET /\r\n\r\n",  // HTTP/0.9
            "GET / HTTP/2.0\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",  // method not a token
            "GET http://h/ HTTP/1.1\r\n\r\n",  // absolute form
            "GET * HTTP/1.1\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "GET /é HTTP/1.1\r\n\r\n",  // non-ASCII target
            "\r\n\r\n",
        ])
    func malformed(_ text: String) {
        #expect(status(of: text) == .badRequest)
    }

    @Test("more than 100 header fields is 431")
    func tooManyFields() {
        let fields = (0..<101).map { "X-F\($0): v\r\n" }.joined()
        #expect(status(of: "GET / HTTP/1.1\r\n" + fields + "\r\n") == .requestHeaderFieldsTooLarge)
        let hundred = (0..<99).map { "X-F\($0): v\r\n" }.joined()
        #expect(status(of: "GET / HTTP/1.1\r\nHost: h\r\n" + hundred + "\r\n") == nil)
    }

    @Test("the byte checker keeps its state across reads split anywhere")
    func splitReads() {
        var checker = RequestHead.ByteChecker()
        #expect(checker.check(Array("GET / HTTP/1.1\r".utf8)) == nil)
        #expect(checker.check(Array("\nHost: x\r".utf8)) == nil)
        #expect(checker.check(Array("y".utf8)) == "bare CR")
    }
}
