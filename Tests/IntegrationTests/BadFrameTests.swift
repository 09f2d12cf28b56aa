import BridgeTestSupport
import Foundation
import NIOWebSocket
import PostgresWebSockets
import Testing

/// Every frame a server must not accept gets a close code and a reason, never silence.
@Suite struct BadFrameTests {
    func expectClose(
        _ client: WebSocketClient, code: UInt16, reasonContains: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let close = try await client.nextClose()
        #expect(close.code == code, "reason: \(close.reason)", sourceLocation: sourceLocation)
        #expect(close.reason.contains(reasonContains), "reason: \(close.reason)", sourceLocation: sourceLocation)
        #expect(try await client.next() == .disconnected, sourceLocation: sourceLocation)
    }

    @Test func textFromReadOnlySocketIs1008() async throws {
        try await TestServer.with { server in
            let client = try await server.connect(channel: uniqueChannel(), mode: "r")
            try await client.send(text: "not allowed")
            try await expectClose(client, code: 1008, reasonContains: "read-only")
        }
    }

    /// An operator follows one client by its `socket_id`: the close is logged with it, and
    /// two sockets have two ids.
    @Test func closesAreLoggedWithTheSocketsID() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let first = try await server.connect(channel: channel, mode: "r")
            let second = try await server.connect(channel: channel, mode: "r")
            try await first.send(text: "not allowed")
            try await expectClose(first, code: 1008, reasonContains: "read-only")
            try await second.send(text: "nor here")
            try await expectClose(second, code: 1008, reasonContains: "read-only")
            let closes = server.log.records(with: [.closeCode: "1008"])
            #expect(closes.count == 2)
            #expect(closes.allSatisfy { $0[.closeReason] == "socket is read-only: its JWT mode is r" })
            #expect(Set(closes.compactMap { $0[.socketID] }).count == 2)
        }
    }

    /// As postgres-websockets: a binary frame whose content is UTF-8 is a message like a text
    /// frame (fragments too); one that is not UTF-8 is refused with 1007.
    @Test func binaryFramesHoldingUTF8AreMessages() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let client = try await server.connect(channel: channel, mode: "rw")
            try await client.send(binary: Array("café".utf8))
            #expect(try JSONParser.parse(try await client.nextText())["payload"] == .string("café"))
            try await client.send(opcode: .binary, payload: Array("frag".utf8), fin: false)
            try await client.send(opcode: .continuation, payload: Array("mented".utf8))
            #expect(try JSONParser.parse(try await client.nextText())["payload"] == .string("fragmented"))
            try await client.send(binary: [0, 1, 2, 255])
            try await expectClose(client, code: 1007, reasonContains: "UTF-8")
        }
    }

    @Test func invalidUTF8Is1007() async throws {
        try await TestServer.with { server in
            let client = try await server.connect(channel: uniqueChannel(), mode: "rw")
            try await client.send(opcode: .text, payload: [0x68, 0x69, 0xC3, 0x28])
            try await expectClose(client, code: 1007, reasonContains: "UTF-8")
        }
    }

    @Test func frameAboveMaxMessageSizeIs1009() async throws {
        try await TestServer.with({ $0.limits.maxMessageSize = 1000 }) { server in
            let client = try await server.connect(channel: uniqueChannel(), mode: "rw")
            try await client.send(text: String(repeating: "a", count: 1001))
            try await expectClose(client, code: 1009, reasonContains: "1000 bytes")
        }
    }

    @Test func fragmentedMessageAboveMaxMessageSizeIs1009() async throws {
        try await TestServer.with({ $0.limits.maxMessageSize = 1000 }) { server in
            let client = try await server.connect(channel: uniqueChannel(), mode: "rw")
            try await client.send(opcode: .text, payload: Array(repeating: 0x61, count: 600), fin: false)
            try await client.send(opcode: .continuation, payload: Array(repeating: 0x61, count: 600), fin: true)
            try await expectClose(client, code: 1009, reasonContains: "1000 bytes")
        }
    }

    @Test func envelopeAbovePostgresLimitIs1009() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            try await db.listen(channel)
            let client = try await server.connect(channel: channel, mode: "rw")
            // 7999 bytes of text is allowed by max-message-size, but its envelope is larger.
            try await client.send(text: String(repeating: "a", count: 7999))
            try await expectClose(client, code: 1009, reasonContains: "7999")
            #expect(try await db.drainNotifications().isEmpty)
        }
    }

    @Test func fragmentedMessageIsReassembled() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let client = try await server.connect(channel: channel, mode: "rw")
            try await client.send(opcode: .text, payload: Array("frag".utf8), fin: false)
            try await client.ping([7])  // control frames may come between fragments
            try await client.send(opcode: .continuation, payload: Array("men".utf8), fin: false)
            try await client.send(opcode: .continuation, payload: Array("ted ✓".utf8), fin: true)
            let envelope = try JSONParser.parse(try await client.nextText())
            #expect(envelope["payload"] == .string("fragmented ✓"))
        }
    }

    @Test func unmaskedClientFrameIs1002() async throws {
        try await TestServer.with { server in
            let client = try await server.connect(channel: uniqueChannel(), mode: "rw")
            try await client.send(opcode: .text, payload: Array("naked".utf8), masked: false)
            try await expectClose(client, code: 1002, reasonContains: "masked")
        }
    }

    @Test func continuationWithoutStartIs1002() async throws {
        try await TestServer.with { server in
            let client = try await server.connect(channel: uniqueChannel(), mode: "rw")
            try await client.send(opcode: .continuation, payload: Array("orphan".utf8))
            try await expectClose(client, code: 1002, reasonContains: "continuation")
        }
    }

    @Test func pingIsAnsweredWithPong() async throws {
        try await TestServer.with { server in
            let client = try await server.connect(channel: uniqueChannel(), mode: "r")
            try await client.ping([1, 2, 3])
            #expect(try await client.next() == .pong([1, 2, 3]))
        }
    }

    @Test func clientCloseIsEchoedAndConnectionEnds() async throws {
        try await TestServer.with { server in
            let client = try await server.connect(channel: uniqueChannel(), mode: "r")
            try await client.close(code: 4000, reason: "bye")
            #expect(try await client.next() == .close(code: 4000, reason: ""))
            #expect(try await client.next() == .disconnected)
        }
    }

    @Test func idleSocketsArePingedAndDroppedWhenSilent() async throws {
        // A pong timeout with room for a loaded 2-core machine to answer in time.
        try await TestServer.with({
            $0.limits.pingInterval = .fromSeconds(0.3); $0.limits.pongTimeout = .fromSeconds(2)
        }) { server in
            let channel = uniqueChannel()
            let alive = try await server.connect("/\(channel)/\(TestTokens.mint(mode: "r"))")
            let silent = try await server.connect("/\(channel)/\(TestTokens.mint(mode: "r"))", answerPings: false)
            let first = try await step("silent: ping") { try await silent.next(timeout: 15) }
            guard case .ping = first else {
                Issue.record("expected a ping, got \(first)")
                return
            }
            #expect(try await step("silent: dropped") { try await silent.next(timeout: 15) } == .disconnected)
            // The socket that answers survives several ping rounds and still gets messages.
            for round in 0..<3 {
                let event = try await step("alive: ping \(round)") { try await alive.next(timeout: 15) }
                guard case .ping = event else {
                    Issue.record("expected a ping, got \(event)")
                    return
                }
            }
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            try await db.notify(channel, "still open")
            #expect(try await alive.nextText() == "still open")
        }
    }
}
