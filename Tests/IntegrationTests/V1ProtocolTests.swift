import BridgeTestSupport
import Foundation
import NIOCore
import NIOWebSocket
import PostgresWebSockets
import Testing

/// The structured protocol `pgws.v1`, row by row of PROTOCOL.md, against the real server.
@Suite struct V1ProtocolTests {
    func db() async throws -> TestDatabase { try await TestDatabase(uri: TemporaryPostgres.sharedURI()) }

    // MARK: - Opening

    @Test func channelsSubscribedAtOpenGetASubscribedFrame() async throws {
        try await TestServer.with { server in
            let (a, b) = (uniqueChannel(), uniqueChannel())
            let token = TestTokens.mint(mode: "rw", channels: [a, b])
            let all = try await WebSocketClient.connectV1(port: server.port, path: "/\(token)")
            #expect(all.responseHeaders["sec-websocket-protocol"] == "pgws.v1")
            var opened: Set<String> = []
            for _ in 0..<2 {
                let frame = try await all.nextJSON()
                #expect(frame["type"] == .string("subscribed"))
                #expect(frame["recovered"] == .bool(false))
                #expect(frame["ref"] == nil)
                if case .string(let channel)? = frame["channel"] { opened.insert(channel) }
            }
            #expect(opened == [a, b])
            let one = try await WebSocketClient.connectV1(port: server.port, path: "/\(b)", token: token)
            #expect(try await one.nextJSON()["channel"] == .string(b))
            // At / with the token in a header: nothing, whatever the token claims.
            let none = try await WebSocketClient.connectV1(port: server.port, path: "/", token: token)
            try await none.send(json: #"{"type":"unsubscribe","channel":"\#(a)","ref":1}"#)
            #expect(try await none.nextJSON()["code"] == .string("not_found"))
            // A write-only token subscribes to nothing at open.
            let writer = try await WebSocketClient.connectV1(
                port: server.port, path: "/\(a)", token: TestTokens.mint(mode: "w"))
            try await writer.send(json: #"{"type":"unsubscribe","channel":"\#(a)"}"#)
            #expect(try await writer.nextJSON()["code"] == .string("not_found"))
        }
    }

    // MARK: - Subscribe, messages, unsubscribe

    @Test func subscribeReceiveAndUnsubscribeWithRefsEchoed() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let client = try await WebSocketClient.connectV1(
                port: server.port, path: "/", token: TestTokens.mint(mode: "r"))
            try await client.send(json: #"{"type":"subscribe","channel":"\#(channel)","ref":"s1"}"#)
            let subscribed = try await client.nextJSON()
            #expect(subscribed["type"] == .string("subscribed"))
            #expect(subscribed["ref"] == .string("s1"))
            #expect(subscribed["offset"] == .null)
            #expect(subscribed["recovered"] == .bool(false))
            let db = try await db()
            try await db.notify(channel, "line one\nline \"two\"")
            let message = try await client.nextJSON()
            #expect(message["type"] == .string("message"))
            #expect(message["channel"] == .string(channel))
            #expect(message["payload"] == .string("line one\nline \"two\""))
            guard case .string(let offset)? = message["offset"] else {
                Issue.record("a message carries its offset as a string")
                return
            }
            #expect(offset.allSatisfy { $0.isLetter || $0.isNumber || ":._-".contains($0) })
            try await client.send(json: #"{"type":"unsubscribe","channel":"\#(channel)","ref":12.50}"#)
            let unsubscribed = try await client.nextJSON()
            #expect(unsubscribed["type"] == .string("unsubscribed"))
            #expect(unsubscribed["ref"] == .number("12.50"), "the ref comes back as it was written")
            try await db.notify(channel, "after")
            try await client.send(json: #"{"type":"unsubscribe","channel":"\#(channel)","ref":7}"#)
            let notFound = try await client.nextJSON()
            #expect(notFound["type"] == .string("error"))
            #expect(notFound["code"] == .string("not_found"))
            #expect(notFound["ref"] == .number("7"))
        }
    }

    @Test func rawAndV1SocketsOnOneChannelEachGetTheirFraming() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let raw = try await server.connect(channel: channel, mode: "r")
            let v1 = try await WebSocketClient.connectV1(
                port: server.port, path: "/\(channel)", token: TestTokens.mint(mode: "r"))
            _ = try await v1.next(type: "subscribed")
            try await db().notify(channel, "shared")
            #expect(try await raw.nextText() == "shared")
            let message = try await v1.nextJSON()
            #expect(message["payload"] == .string("shared"))
        }
    }

    @Test func everyBadRequestGetsAnErrorAndTheSocketStaysOpen() async throws {
        try await TestServer.with { server in
            let client = try await WebSocketClient.connectV1(
                port: server.port, path: "/", token: TestTokens.mint(mode: "rw", channel: "only-this"))
            let cases: [(String, String, JSONValue?)] = [
                ("not json", "bad_request", nil),
                ("[1,2]", "bad_request", nil),
                (#"{"ref":"r"}"#, "bad_request", .string("r")),
                (#"{"type":"dance","ref":"r"}"#, "bad_request", .string("r")),
                (#"{"type":"subscribe","ref":{"x":1}}"#, "bad_request", nil),
                (#"{"type":"subscribe","ref":"r"}"#, "bad_request", .string("r")),
                (#"{"type":"subscribe","channel":5,"ref":"r"}"#, "bad_request", .string("r")),
                (#"{"type":"subscribe","channel":"","ref":"r"}"#, "bad_request", .string("r")),
                (
                    #"{"type":"subscribe","channel":"only-this","since":"no spaces","ref":"r"}"#, "bad_request",
                    .string("r")
                ),
                (#"{"type":"publish","channel":"only-this","payload":1,"ref":"r"}"#, "bad_request", .string("r")),
                (#"{"type":"subscribe","channel":"other","ref":"r"}"#, "forbidden", .string("r")),
                (#"{"type":"publish","channel":"other","payload":"x","ref":"r"}"#, "forbidden", .string("r")),
                (#"{"type":"refresh","token":"not.a.token","ref":"r"}"#, "unauthorized", .string("r")),
                (#"{"type":"refresh","token":"\#(TestTokens.mint(mode: "x"))","ref":"r"}"#, "forbidden", .string("r")),
            ]
            for (frame, code, ref) in cases {
                try await client.send(json: frame)
                let error = try await client.nextJSON()
                #expect(error["type"] == .string("error"), "\(frame)")
                #expect(error["code"] == .string(code), "\(frame): \(error)")
                #expect(error["ref"] == ref, "\(frame)")
                #expect(error["reason"]?.stringValue?.isEmpty == false)
            }
            let reader = try await WebSocketClient.connectV1(
                port: server.port, path: "/", token: TestTokens.mint(mode: "r"))
            try await reader.send(json: #"{"type":"publish","channel":"c","payload":"x","ref":1}"#)
            #expect(try await reader.nextJSON()["code"] == .string("forbidden"), "an r token does not publish")
            try await client.ping([1])
            #expect(try await client.next() == .pong([1]), "still open")
        }
    }

    @Test func framesOverTheLimitAndInvalidUTF8CloseTheSocket() async throws {
        try await TestServer.with({ $0.limits.maxMessageSize = 100 }) { server in
            let token = TestTokens.mint(mode: "rw")
            let big = try await WebSocketClient.connectV1(port: server.port, path: "/", token: token)
            try await big.send(text: String(repeating: "x", count: 100 + 4096 + 1))
            #expect(try await big.nextClose().code == 1009)
            let utf8 = try await WebSocketClient.connectV1(port: server.port, path: "/", token: token)
            try await utf8.send(opcode: .text, payload: [0x7B, 0xC3, 0x28, 0x7D])
            #expect(try await utf8.nextClose().code == 1007)
        }
    }

    // MARK: - Publish

    @Test func publishIsConfirmedAfterTheCommitWithTheEnvelopeOfRawMode() async throws {
        let audit = uniqueChannel("audit")
        try await TestServer.with({
            $0.channels.auditChannel = audit; $0.limits.maxMessageSize = 200
        }) { server in
            let channel = uniqueChannel()
            let db = try await db()
            try await db.listen(channel)
            try await db.listen(audit)
            let client = try await WebSocketClient.connectV1(
                port: server.port, path: "/", token: TestTokens.mint(mode: "rw"))
            try await client.send(json: #"{"type":"publish","channel":"\#(channel)","payload":"hello","ref":"p1"}"#)
            let published = try await client.nextJSON()
            #expect(published["type"] == .string("published"))
            #expect(published["channel"] == .string(channel))
            #expect(published["ref"] == .string("p1"))
            // Committed before the reply: both copies are in PostgreSQL's queue (how soon this
            // session reads them depends on the machine's load, so the wait is generous).
            let received = try await db.notifications(count: 2, timeout: 10)
            #expect(Set(received.map(\.channel)) == [channel, audit])
            let envelope = try JSONParser.parse(received[0].payload)
            #expect(envelope["event"] == .string("WebsocketMessage"))
            #expect(envelope["payload"] == .string("hello"))
            try await client.send(
                json:
                    #"{"type":"publish","channel":"\#(channel)","payload":"\#(String(repeating: "y", count: 201))","ref":2}"#
            )
            let tooLarge = try await client.nextJSON()
            #expect(tooLarge["code"] == .string("too_large"))
            #expect(tooLarge["ref"] == .number("2"))
        }
    }

    @Test func publishWhileTheDatabaseIsDownAndTheQueueFullIsUnavailable() async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        try await TestServer.with(databaseURI: cluster.uri, { $0.notifier.maxPendingMessages = 1 }) { server in
            let client = try await WebSocketClient.connectV1(
                port: server.port, path: "/", token: TestTokens.mint(mode: "w"))
            try await cluster.stopServer()
            try await server.log.waitForRecord(with: [.database: "lost"])
            try await client.send(json: #"{"type":"publish","channel":"c","payload":"queued","ref":1}"#)
            try await client.send(json: #"{"type":"publish","channel":"c","payload":"refused","ref":2}"#)
            let error = try await client.nextJSON()
            #expect(error["type"] == .string("error"))
            #expect(error["code"] == .string("unavailable"))
            #expect(error["ref"] == .number("2"))
            try await cluster.startServerAgain()
            let published = try await client.nextJSON(timeout: 30)
            #expect(published["type"] == .string("published"))
            #expect(published["ref"] == .number("1"))
        }
    }

    // MARK: - Refresh

    @Test func refreshReplacesClaimsMovesExpAndDropsLostGrants() async throws {
        try await TestServer.with { server in
            let (a, b) = (uniqueChannel(), uniqueChannel())
            let soon = WallClock.seconds() + 3
            let client = try await WebSocketClient.connectV1(
                port: server.port, path: "/", token: TestTokens.mint(mode: "r", channels: [a, b], exp: soon))
            for channel in [a, b] {
                try await client.send(json: #"{"type":"subscribe","channel":"\#(channel)"}"#)
                _ = try await client.next(type: "subscribed")
            }
            let later = (WallClock.seconds() + 3600).rounded()
            try await client.send(
                json: #"{"type":"refresh","token":"\#(TestTokens.mint(mode: "rw", channel: b, exp: later))","ref":"f"}"#
            )
            let dropped = try await client.nextJSON()
            #expect(dropped["type"] == .string("unsubscribed"))
            #expect(dropped["channel"] == .string(a))
            #expect(dropped["reason"]?.stringValue?.isEmpty == false)
            #expect(dropped["ref"] == nil)
            let refreshed = try await client.nextJSON()
            #expect(refreshed["type"] == .string("refreshed"))
            #expect(refreshed["ref"] == .string("f"))
            #expect(refreshed["exp"] == .number(String(Int64(later))))
            // Past the first token's exp, the socket is still open and reads b; the new mode writes.
            try await Task.sleep(for: .seconds(4))
            try await db().notify(b, "still here")
            #expect(try await client.nextJSON()["payload"] == .string("still here"))
            try await client.send(json: #"{"type":"publish","channel":"\#(b)","payload":"now I write","ref":3}"#)
            _ = try await client.next(type: "published")
            try await client.send(json: #"{"type":"subscribe","channel":"\#(a)","ref":4}"#)
            // (The message just published on b comes back too, before or after its reply.)
            #expect(try await client.next(type: "error")["code"] == .string("forbidden"))
        }
    }

    // MARK: - Resume

    /// A client that disconnects, misses N messages while a sender keeps publishing, and
    /// resubscribes with `since` gets exactly the missed ones, then live ones: no gap, no
    /// duplicate, `recovered: true`.
    @Test func resumeGetsExactlyWhatWasMissedThenLiveOnes() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let token = TestTokens.mint(mode: "r")
            let db = try await db()
            let first = try await WebSocketClient.connectV1(port: server.port, path: "/\(channel)", token: token)
            _ = try await first.next(type: "subscribed")
            for i in 1...5 { try await db.notify(channel, "m\(i)") }
            var lastOffset = ""
            for i in 1...5 {
                let message = try await first.nextJSON()
                #expect(message["payload"] == .string("m\(i)"))
                lastOffset = message["offset"]?.stringValue ?? ""
            }
            await first.disconnect()
            let sender = Task {
                for i in 6...400 { try await db.notify(channel, "m\(i)") }
            }
            for _ in 0..<20 { await Task.yield() }
            let second = try await WebSocketClient.connectV1(port: server.port, path: "/", token: token)
            try await second.send(
                json: #"{"type":"subscribe","channel":"\#(channel)","since":"\#(lastOffset)","ref":1}"#)
            var expected = 6
            var subscribed: JSONValue? = nil
            while expected <= 400 {
                let frame = try await second.nextJSON()
                if frame["type"] == .string("subscribed") {
                    #expect(subscribed == nil, "one subscribed reply")
                    subscribed = frame
                    continue
                }
                #expect(frame["payload"] == .string("m\(expected)"), "in order, no gap, no duplicate")
                expected += 1
            }
            try await sender.value
            #expect(subscribed?["recovered"] == .bool(true))
            #expect(subscribed?["ref"] == .number("1"))
            try await second.expectSilence(for: 0.3)
        }
    }

    @Test func resumeFromAnotherProcessOrBeyondTheWindowIsNotRecovered() async throws {
        try await TestServer.with({ $0.limits.maxLag = 1 << 20 }) { server in
            let channel = uniqueChannel()
            let token = TestTokens.mint(mode: "r")
            let client = try await WebSocketClient.connectV1(port: server.port, path: "/", token: token)
            try await client.send(json: #"{"type":"subscribe","channel":"\#(channel)","since":"elsewhere:12"}"#)
            let foreign = try await client.next(type: "subscribed")
            #expect(foreign["recovered"] == .bool(false))
            let db = try await db()
            try await db.notify(channel, "first")
            let first = try await client.nextJSON()
            let offset = try #require(first["offset"]?.stringValue)
            // 2 MB more than the 1 MiB window: the message after `first` is gone.
            try await db.query(
                "SELECT count(pg_notify($1, lpad(g::text, 1000, 'x'))) FROM generate_series(1, 2000) AS g", [channel])
            for _ in 0..<2000 { _ = try await client.nextJSON(timeout: 30) }
            let again = try await WebSocketClient.connectV1(port: server.port, path: "/", token: token)
            try await again.send(json: #"{"type":"subscribe","channel":"\#(channel)","since":"\#(offset)"}"#)
            var replayed = 0
            while true {
                let frame = try await again.nextJSON(timeout: 30)
                if frame["type"] == .string("subscribed") {
                    #expect(frame["recovered"] == .bool(false))
                    break
                }
                replayed += 1
            }
            #expect(replayed > 0 && replayed < 2000, "what the window still holds: \(replayed)")
        }
    }
}
