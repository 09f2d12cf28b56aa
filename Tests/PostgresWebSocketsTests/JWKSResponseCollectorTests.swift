import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import PostgresWebSockets

/// The `JWKSHTTPClient`'s pipeline past the socket and TLS: NIOHTTP1's client codec and a
/// `JWKSResponseCollector`, on an `EmbeddedChannel` fed raw response bytes, with the virtual
/// clock of its `EmbeddedEventLoop` for the deadline.
@Suite("JWKS HTTP client: the response collector")
struct JWKSResponseCollectorTests {
    /// One fetch's channel, connected (so the request has gone out), and its outcome.
    final class Fetch {
        let loop = EmbeddedEventLoop()
        let channel: EmbeddedChannel
        private(set) var outcome: Result<JWKSHTTPResponse, JWKSFetchFailure>?

        deinit {
            // An open pipeline keeps its handlers alive (LeakSanitizer).
            _ = try? channel.finish(acceptAlreadyClosed: true)
        }

        init(
            url: String = "http://127.0.0.1:8080/keys", maxBodyBytes: Int = 1 << 20, timeout: TimeAmount = .seconds(10)
        )
            throws
        {
            channel = EmbeddedChannel(loop: loop)
            let client = try JWKSHTTPClient(settings: JWKSSettings(url: url))
            let promise = loop.makePromise(of: JWKSHTTPResponse.self)
            try channel.pipeline.syncOperations.addHTTPClientHandlers(leftOverBytesStrategy: .dropBytes)
            try channel.pipeline.syncOperations.addHandler(
                JWKSResponseCollector(
                    request: client.requestHead, maxBodyBytes: maxBodyBytes, deadline: loop.now + timeout,
                    timeout: timeout, promise: promise))
            // Weak: the channel's pipeline holds the promise, and the fetch holds the channel.
            promise.futureResult.assumeIsolated().whenComplete { [weak self] result in
                self?.outcome = result.mapError { JWKSFetchFailure($0) }  // as the client maps it
            }
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
        }

        /// The bytes the server "sends", in pieces.
        func receive(_ pieces: String...) throws {
            for piece in pieces { try channel.writeInbound(ByteBuffer(string: piece)) }
        }

        /// The request as written to the socket.
        func sentRequest() throws -> String {
            var text = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
            return text
        }

        /// The connection ends (for the pipeline, as when the server closes it).
        func serverCloses() throws {
            try channel.close().wait()
        }

        var body: String? {
            guard case .success(let response) = outcome else { return nil }
            return String(buffer: response.body)
        }

        var failure: JWKSFetchFailure? {
            guard case .failure(let failure) = outcome else { return nil }
            return failure
        }
    }

    @Test(
        "the request: GET path and query, Host without user information, Basic credentials, Connection: close, no compression"
    )
    func request() throws {
        let fetch = try Fetch(url: "http://reader:s3cr%40t@idp.example:8080/jwks?tenant=7#frag")
        let request = try fetch.sentRequest()
        let lines = request.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.first == "GET /jwks?tenant=7 HTTP/1.1")
        #expect(lines.contains("host: idp.example:8080"))
        #expect(lines.contains("connection: close"))
        #expect(lines.contains("accept: application/jwk-set+json, application/json"))
        #expect(lines.contains("authorization: Basic cmVhZGVyOnMzY3JAdA=="), "reader:s3cr@t")
        #expect(!request.lowercased().contains("accept-encoding"))
        #expect(!request.contains("frag"))
        #expect(request.hasSuffix("\r\n\r\n"), "no body")
    }

    @Test("a Content-Length body, in pieces, with its caching headers; the connection is closed after it")
    func contentLength() throws {
        let fetch = try Fetch()
        try fetch.receive(
            "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nCache-Control: max-age=60\r\nAge: 5\r\n\r\n{\"ke", "ys\":[]}")
        #expect(fetch.body == #"{"keys":[]}"#)
        guard case .success(let response) = fetch.outcome else { return }
        #expect(response.status == 200)
        #expect(response.headers["cache-control"] == ["max-age=60"])
        #expect(response.headers["age"] == ["5"])
        #expect(!fetch.channel.isActive)
    }

    @Test("a chunked body, trailers and all")
    func chunked() throws {
        let fetch = try Fetch()
        try fetch.receive(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\n{\"key\r\n", "6\r\ns\":[]}\r\n",
            "0\r\nX-Trailer: 1\r\n\r\n")
        #expect(fetch.body == #"{"keys":[]}"#)
    }

    @Test("a body without length ends with the connection")
    func closeDelimited() throws {
        let fetch = try Fetch()
        try fetch.receive("HTTP/1.1 200 OK\r\n\r\n{\"keys\":[]}")
        #expect(fetch.outcome == nil)
        try fetch.serverCloses()
        #expect(fetch.body == #"{"keys":[]}"#)
    }

    @Test("a connection closed before the end of a Content-Length or chunked body is a failure")
    func truncated() throws {
        let fetch = try Fetch()
        try fetch.receive("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"keys\":[")
        #expect(fetch.outcome == nil)
        try fetch.serverCloses()
        #expect(fetch.failure == .truncated)
        #expect(fetch.failure?.reason == "connection closed before the end of the response")

        let chunked = try Fetch()
        try chunked.receive("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"key\r\n")
        try chunked.serverCloses()
        #expect(chunked.failure == .truncated)

        let headless = try Fetch()
        try headless.receive("HTTP/1.1 200 OK\r\nContent-Le")
        try headless.serverCloses()
        #expect(headless.failure == .truncated)
    }

    @Test("a body over the limit is refused by its Content-Length, before any of it is read")
    func tooLongByContentLength() throws {
        let fetch = try Fetch(maxBodyBytes: 16)
        try fetch.receive("HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n")
        #expect(fetch.failure?.reason == "response longer than 16 bytes")
        #expect(!fetch.channel.isActive, "closed: nothing more is read")
        try fetch.receive(String(repeating: "x", count: 17))  // ignored
        #expect(fetch.failure?.reason == "response longer than 16 bytes")

        let exact = try Fetch(maxBodyBytes: 16)
        try exact.receive("HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n", String(repeating: "x", count: 16))
        #expect(exact.body?.count == 16, "the limit itself is allowed")

        let huge = try Fetch(maxBodyBytes: 16)
        try huge.receive("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n")
        #expect(huge.failure != nil)
    }

    @Test("a chunked body is refused at the chunk that passes the limit")
    func tooLongChunked() throws {
        let fetch = try Fetch(maxBodyBytes: 16)
        let ten = String(repeating: "x", count: 10)
        try fetch.receive("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "a\r\n\(ten)\r\n")
        #expect(fetch.outcome == nil)
        try fetch.receive("a\r\n\(ten)\r\n")
        #expect(fetch.failure?.reason == "response longer than 16 bytes")
        #expect(!fetch.channel.isActive)
    }

    @Test("a redirect is a failure naming its status, not followed; so is any other status but 200")
    func statuses() throws {
        let redirect = try Fetch()
        try redirect.receive("HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/\r\nContent-Length: 0\r\n\r\n")
        #expect(
            redirect.failure == JWKSFetchFailure(reason: "HTTP status 302 (redirects are not followed)", status: 302))
        #expect(!redirect.channel.isActive)
        #expect(try redirect.sentRequest().ranges(of: "GET ").count == 1, "one request, no second")

        let moved = try Fetch()
        try moved.receive("HTTP/1.1 308 Permanent Redirect\r\nLocation: /elsewhere\r\n\r\n")
        #expect(moved.failure?.status == 308)

        let error = try Fetch()
        try error.receive("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\n")
        #expect(error.failure == JWKSFetchFailure(reason: "HTTP status 500", status: 500))

        let noContent = try Fetch()
        try noContent.receive("HTTP/1.1 204 No Content\r\n\r\n")
        #expect(noContent.failure?.status == 204)
    }

    @Test("a compressed body is refused: none was asked for")
    func compressed() throws {
        let fetch = try Fetch()
        try fetch.receive("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\n")
        #expect(fetch.failure?.reason.hasPrefix("compressed response") == true)
    }

    @Test("garbage instead of HTTP is a one-line failure")
    func malformed() throws {
        let fetch = try Fetch()
        try fetch.receive("SSH-2.0-OpenSSH_9.6\r\n\r\n")
        #expect(
            fetch.failure?.reason.hasPrefix("malformed HTTP response") == true, "\(String(describing: fetch.failure))")
        #expect(!fetch.channel.isActive)
    }

    @Test("the deadline covers the whole exchange: a response that trickles fails at it")
    func timeout() throws {
        let fetch = try Fetch(timeout: .seconds(10))
        try fetch.receive("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{")
        fetch.loop.advanceTime(by: .milliseconds(9_999))
        try fetch.receive("\"k")
        #expect(fetch.outcome == nil)
        fetch.loop.advanceTime(by: .milliseconds(1))
        #expect(fetch.failure?.reason == "no complete answer within 10 s")
        #expect(!fetch.channel.isActive)
        try fetch.receive("eys\":[]}")  // too late: ignored
        #expect(fetch.failure?.reason == "no complete answer within 10 s")

        let silent = try Fetch(timeout: .milliseconds(500))
        silent.loop.advanceTime(by: .milliseconds(500))
        #expect(silent.failure?.reason == "no complete answer within 0.5 s")
    }

    @Test("a response in time cancels the deadline")
    func noTimeoutAfterTheResponse() throws {
        let fetch = try Fetch(timeout: .seconds(1))
        try fetch.receive("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        fetch.loop.advanceTime(by: .seconds(5))
        #expect(fetch.body == "{}")
    }

    @Test("transport errors are one line without the URL; a failure keeps its status")
    func transportErrors() {
        #expect(JWKSFetchFailure(JWKSFetchFailure.status(302) as any Error).status == 302)
        #expect(
            JWKSFetchFailure(IOError(errnoCode: 111, reason: "connect")).reason == "network error: Connection refused")
        #expect(JWKSFetchFailure(ChannelError.connectTimeout(.seconds(10))).reason == "no connection within 10 s")
        #expect(JWKSFetchFailure(HTTPParserError.invalidEOFState) == .truncated)
        #expect(JWKSFetchFailure(HTTPParserError.invalidStatus).reason.hasPrefix("malformed HTTP response"))
    }
}
