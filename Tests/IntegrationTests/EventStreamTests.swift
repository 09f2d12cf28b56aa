import BridgeTestSupport
import Foundation
import NIOCore
import PostgresWebSockets
import Testing

/// Server-sent events, as PROTOCOL.md describes them, against the real server.
@Suite struct EventStreamTests {
    func db() async throws -> TestDatabase { try await TestDatabase(uri: TemporaryPostgres.sharedURI()) }

    @Test func aChannelStreamsItsMessagesAsEventsWithOffsets() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let stream = try await EventStreamClient.open(
                port: server.port, path: "/\(channel)/\(TestTokens.mint(mode: "r"))")
            #expect(stream.status == 200)
            #expect(stream.headers["content-type"] == "text/event-stream")
            let db = try await db()
            try await db.notify(channel, "one")
            try await db.notify(channel, "two\nlines\r\nand\rthree")
            guard case .event(let id, let type, let data) = try await stream.nextEvent() else {
                Issue.record("expected an event")
                return
            }
            #expect(data == "one")
            #expect(type == nil)
            #expect(id?.isEmpty == false)
            guard case .event(let second, _, let lines) = try await stream.nextEvent() else {
                Issue.record("expected an event")
                return
            }
            #expect(lines == "two\nlines\nand\nthree", "every line ending splits, as EventSource does")
            #expect(second != id)
        }
    }

    @Test func refusalsAreThoseOfTheHandshake() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let cases: [(String, [(String, String)], Int)] = [
                ("/\(channel)/not-a-token", [], 401),
                ("/\(channel)/\(TestTokens.mint(mode: "w"))", [], 403),
                ("/other/\(TestTokens.mint(mode: "r", channel: channel))", [], 403),
                (
                    "/\(channel)/\(TestTokens.mint(mode: "r"))",
                    [("Authorization", "Bearer \(TestTokens.mint(mode: "r"))")], 400
                ),
                ("/\(TestTokens.mint(mode: "r", channel: channel))", [], 404),
            ]
            for (path, headers, status) in cases {
                let stream = try await EventStreamClient.open(port: server.port, path: path, headers: headers)
                #expect(stream.status == status, "\(path)")
                #expect(try await stream.refusalBody().isEmpty == false)
            }
            let bearer = try await EventStreamClient.open(
                port: server.port, path: "/\(channel)",
                headers: [("Authorization", "Bearer \(TestTokens.mint(mode: "r"))")])
            #expect(bearer.status == 200)
        }
    }

    @Test func lastEventIDResumesAndAGapIsSaid() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let path = "/\(channel)/\(TestTokens.mint(mode: "r"))"
            let db = try await db()
            let first = try await EventStreamClient.open(port: server.port, path: path)
            try await db.notify(channel, "seen")
            guard case .event(let seenID?, _, "seen") = try await first.nextEvent() else {
                Issue.record("expected the first event")
                return
            }
            await first.close()
            try await db.notify(channel, "missed 1")
            try await db.notify(channel, "missed 2")
            let resumed = try await EventStreamClient.open(
                port: server.port, path: path, headers: [("Last-Event-ID", seenID)])
            for expected in ["missed 1", "missed 2"] {
                guard case .event(_, nil, let data) = try await resumed.nextEvent() else {
                    Issue.record("expected a replayed event")
                    return
                }
                #expect(data == expected)
            }
            let elsewhere = try await EventStreamClient.open(
                port: server.port, path: path, headers: [("Last-Event-ID", "another-process:5")])
            #expect(try await elsewhere.nextEvent() == .event(id: nil, type: "gap", data: ""))
            try await db.notify(channel, "live")
            guard case .event(_, nil, "live") = try await elsewhere.nextEvent() else {
                Issue.record("expected the live event after the gap")
                return
            }
        }
    }

    @Test func keepAliveCommentsAndTheEndAtExp() async throws {
        try await TestServer.with({ $0.limits.pingInterval = .milliseconds(300) }) { server in
            let channel = uniqueChannel()
            let stream = try await EventStreamClient.open(
                port: server.port, path: "/\(channel)/\(TestTokens.mint(mode: "r", exp: WallClock.seconds() + 2))")
            #expect(try await stream.next() == .comment("keep-alive"))
            var ending: [StreamEvent] = []
            while ending.last != .ended {
                let next = try await stream.next()
                if case .comment = next { continue }
                ending.append(next)
            }
            #expect(ending == [.event(id: nil, type: "expired", data: ""), .ended])
        }
    }

    @Test func aStreamCountsAsASocketForTheLimitAndMetaEvents() async throws {
        let meta = uniqueChannel("meta")
        try await TestServer.with({
            $0.limits.maxConnections = 1; $0.channels.metaChannel = meta
        }) { server in
            let db = try await db()
            try await db.listen(meta)
            let channel = uniqueChannel()
            let stream = try await EventStreamClient.open(
                port: server.port, path: "/\(channel)/\(TestTokens.mint(mode: "r"))")
            #expect(stream.status == 200)
            let opened = try JSONParser.parse(try await db.nextNotification().payload)
            #expect(opened["event"] == .string("ConnectionOpen"))
            #expect(opened["payload"] == .string(channel))
            let refused = try await server.open("/\(channel)/\(TestTokens.mint(mode: "r"))")
            guard case .refused(let refusal) = refused else {
                Issue.record("the stream holds the one slot")
                return
            }
            #expect(refusal.status == 503)
            await stream.close()
            let closed = try JSONParser.parse(try await db.nextNotification().payload)
            #expect(closed["event"] == .string("ConnectionClose"))
        }
    }
}
