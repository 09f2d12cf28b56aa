import BridgeTestSupport
import Foundation
import NIOCore
import PostgresWebSockets
import Testing

/// Database -> sockets and sockets -> database, through a real PostgreSQL.
@Suite struct MessagingTests {
    let db: TestDatabase

    init() async throws {
        db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
    }

    @Test func notifyPayloadReachesSocketByteForByte() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let client = try await server.connect(channel: channel, mode: "r")
            let payloads = [
                "plain",
                #"{"json":"with \"quotes\"", 'single' and \backslash}"#,
                "unicode: żółć 日本語 🚀 \u{2028}",
                "line\nbreaks\tand\r\ncontrol",
                String(repeating: "x", count: 7999),
                String(repeating: "é", count: 3999) + "x",  // 7999 bytes of two-byte characters
            ]
            for payload in payloads {
                try await db.notify(channel, payload)
                let received = try await client.nextText()
                #expect(received == payload)
                #expect(received.utf8.count == payload.utf8.count)
            }
        }
    }

    @Test func notifyStatementAndTransactionsDeliverInCommitOrder() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let client = try await server.connect(channel: channel, mode: "r")
            let quoted = "\"" + channel.replacingOccurrences(of: "\"", with: "\"\"") + "\""
            try await db.query("BEGIN")
            for i in 0..<5 { try await db.query("NOTIFY \(quoted), 'tx-\(i)'") }
            try await db.query("COMMIT")
            for i in 0..<5 {
                #expect(try await client.nextText() == "tx-\(i)")
            }
        }
    }

    @Test func clientMessageBecomesEnvelopeWithClaims() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            try await db.listen(channel)
            let exp = Date().timeIntervalSince1970 + 3600
            let token = TestTokens.mint(
                mode: "rw", channel: channel, exp: exp.rounded(),
                extra: [
                    ("user", .string("alice")), ("n", .number("12345678901234567890")),
                    ("nested", .object([("k", .array([.bool(true), .null]))])),
                ])
            let client = try await server.connect("/\(token)")
            let before = Date().timeIntervalSince1970
            let text = "hello \"world\" \\ żółć\n"
            try await client.send(text: text)
            let notification = try await db.nextNotification()
            #expect(notification.channel == channel)
            let envelope = try JSONParser.parse(notification.payload)
            #expect(envelope["event"] == .string("WebsocketMessage"))
            #expect(envelope["channel"] == .string(channel))
            #expect(envelope["payload"] == .string(text))
            let claims = try #require(envelope["claims"])
            #expect(claims["mode"] == .string("rw"))
            #expect(claims["channel"] == .string(channel))
            #expect(claims["user"] == .string("alice"))
            #expect(claims["n"] == .number("12345678901234567890"))
            #expect(claims["nested"] == .object([("k", .array([.bool(true), .null]))]))
            #expect(claims["exp"] == .number(String(Int64(exp.rounded()))))
            let deliveredAt = try #require(claims["message_delivered_at"]?.doubleValue)
            #expect(deliveredAt >= before - 1 && deliveredAt <= Date().timeIntervalSince1970 + 1)
            // The sender reads its channel too, so it sees the same envelope.
            #expect(try await client.nextText() == notification.payload)
        }
    }

    @Test func identicalMessagesBackToBackBothArrive() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            try await db.listen(channel)
            let client = try await server.connect(channel: channel, mode: "w")
            for _ in 0..<20 { try await client.send(text: "same") }
            let received = try await db.notifications(count: 20)
            #expect(Set(received.map(\.payload)).count == 20)
            for notification in received {
                #expect(try JSONParser.parse(notification.payload)["payload"] == .string("same"))
            }
            #expect(try await db.drainNotifications().isEmpty)
        }
    }

    @Test func messagesFromOneSocketKeepTheirOrder() async throws {
        try await TestServer.with({ $0.notifier.poolSize = 4 }) { server in
            let channel = uniqueChannel()
            try await db.listen(channel)
            let client = try await server.connect(channel: channel, mode: "w")
            for i in 0..<500 { try await client.send(text: "m\(i)") }
            let received = try await db.notifications(count: 500)
            let payloads = try received.map { try JSONParser.parse($0.payload)["payload"]?.stringValue }
            #expect(payloads == (0..<500).map { "m\($0)" })
        }
    }

    @Test func auditChannelGetsIdenticalCopy() async throws {
        let audit = uniqueChannel("audit")
        try await TestServer.with({ $0.channels.auditChannel = audit }) { server in
            let channel = uniqueChannel()
            try await db.listen(channel)
            try await db.listen(audit)
            let client = try await server.connect(channel: channel, mode: "w")
            try await client.send(text: "audited")
            let received = try await db.notifications(count: 2)
            let onChannel = try #require(received.first { $0.channel == channel })
            let onAudit = try #require(received.first { $0.channel == audit })
            #expect(onAudit.payload == onChannel.payload)
            #expect(try JSONParser.parse(onAudit.payload)["payload"] == .string("audited"))
        }
    }

    @Test func metaChannelReportsOpenAndClose() async throws {
        let meta = uniqueChannel("meta")
        try await TestServer.with({ $0.channels.metaChannel = meta }) { server in
            try await db.listen(meta)
            let (a, b) = (uniqueChannel(), uniqueChannel())
            let token = TestTokens.mint(mode: "r", channels: [a, b], extra: [("user", .string("bob"))])
            let client = try await server.connect("/\(token)")
            let open = try JSONParser.parse(try await db.nextNotification().payload)
            #expect(open["event"] == .string("ConnectionOpen"))
            #expect(open["channel"] == .string(meta))
            #expect(open["payload"] == .string("\(a),\(b)"))
            #expect(open["claims"]?["user"] == .string("bob"))
            #expect(open["claims"]?["message_delivered_at"]?.doubleValue != nil)
            try await client.close()
            let close = try JSONParser.parse(try await db.nextNotification().payload)
            #expect(close["event"] == .string("ConnectionClose"))
            #expect(close["payload"] == .string("\(a),\(b)"))
            #expect(close["claims"]?["user"] == .string("bob"))
        }
    }

    @Test func oneSendReachesEveryChannelOfTheSocket() async throws {
        try await TestServer.with { server in
            let (a, b) = (uniqueChannel(), uniqueChannel())
            try await db.listen(a)
            try await db.listen(b)
            let writer = try await server.connect("/\(TestTokens.mint(mode: "w", channels: [a, b]))")
            let readerA = try await server.connect(channel: a, mode: "r")
            let readerB = try await server.connect(channel: b, mode: "r")
            try await writer.send(text: "to both")
            let onA = try JSONParser.parse(try await readerA.nextText())
            let onB = try JSONParser.parse(try await readerB.nextText())
            #expect(onA["channel"] == .string(a))
            #expect(onB["channel"] == .string(b))
            #expect(onA["payload"] == .string("to both"))
            #expect(onB["payload"] == .string("to both"))
            let fromDatabase = try await db.notifications(count: 2)
            #expect(Set(fromDatabase.map(\.channel)) == [a, b])
            // A write-only socket does not read its channels.
            try await writer.expectSilence(for: 0.3)
        }
    }

    @Test func everyReaderOfAChannelGetsEveryNotification() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            var readers: [WebSocketClient] = []
            for _ in 0..<25 { readers.append(try await server.connect(channel: channel, mode: "r")) }
            for i in 0..<10 { try await db.notify(channel, "n\(i)") }
            for reader in readers {
                for i in 0..<10 {
                    #expect(try await reader.nextText() == "n\(i)")
                }
            }
        }
    }

    /// The last socket's channel is UNLISTENed once max-lag-seconds passed (the window during
    /// which a client may come back and resume); 0.2 s here.
    @Test func listenIsIssuedOnceAndUnlistenAfterLastSocket() async throws {
        try await TestServer.with({ $0.limits.maxLagDuration = .milliseconds(200) }) { server in
            let channel = uniqueChannel()
            #expect(try await !server.bridge.listeningChannels().contains(channel))
            let first = try await server.connect(channel: channel, mode: "r")
            let second = try await server.connect(channel: channel, mode: "r")
            let listening = try await server.bridge.listeningChannels()
            #expect(listening.filter { $0 == channel }.count == 1)
            await first.disconnect()
            // The second socket still reads: the channel must stay LISTENed.
            try await db.notify(channel, "still here")
            #expect(try await second.nextText() == "still here")
            #expect(try await server.bridge.listeningChannels().contains(channel))
            await second.disconnect()
            try await waitUntil(timeout: 10, "UNLISTEN \(channel)") {
                try await !server.bridge.listeningChannels().contains(channel)
            }
            // A write-only socket never makes the server LISTEN.
            let writer = try await server.connect(channel: channel, mode: "w")
            try await writer.send(text: "x")
            #expect(try await !server.bridge.listeningChannels().contains(channel))
        }
    }

    @Test func channelNamesWithSQLSyntaxAreQuotedEverywhere() async throws {
        let audit = "audit\"; DROP TABLE canary; --" + String(UUID().uuidString.prefix(4))
        try await TestServer.with({
            $0.channels.auditChannel = audit; $0.channels.metaChannel = "meta'; DROP TABLE canary; --"
        }) { server in
            try await db.query("CREATE TABLE IF NOT EXISTS canary (id int)")
            let channel = "a\"b'c; DROP TABLE canary; -- \\ żółć \(UUID().uuidString.prefix(4))"
            try await db.listen(channel)
            try await db.listen(audit)
            let client = try await server.connect(channel: channel, mode: "rw")
            #expect(try await server.bridge.listeningChannels().contains(channel))
            try await db.notify(channel, "from sql")
            #expect(try await client.nextText() == "from sql")
            #expect(try await db.nextNotification().payload == "from sql")
            try await client.send(text: "from socket")
            let received = try await db.notifications(count: 2)
            #expect(Set(received.map(\.channel)) == [channel, audit])
            #expect(try JSONParser.parse(try await client.nextText())["channel"] == .string(channel))
            let tables = try await db.query("SELECT count(*) FROM pg_tables WHERE tablename = 'canary'")
            #expect(tables.first?.first == "1")
        }
    }

    /// "caf\u{E9}" and "cafe\u{301}" are equal Swift Strings but distinct PostgreSQL channels.
    @Test func canonicallyEquivalentChannelNamesStayApart() async throws {
        try await TestServer.with { server in
            let suffix = uniqueChannel("-")
            let composed = "caf\u{E9}" + suffix
            let decomposed = "cafe\u{301}" + suffix
            #expect(composed == decomposed && !composed.utf8.elementsEqual(decomposed.utf8))
            let onComposed = try await server.connect(channel: composed, mode: "r")
            let onDecomposed = try await server.connect(channel: decomposed, mode: "r")
            #expect(try await server.bridge.listeningChannels().filter { $0.hasSuffix(suffix) }.count == 2)
            try await db.notify(decomposed, "for the decomposed one")
            try await db.notify(composed, "for the composed one")
            #expect(try await onComposed.nextText() == "for the composed one")
            #expect(try await onDecomposed.nextText() == "for the decomposed one")
            let claimsComposed = TestTokens.mint(mode: "r", channel: composed)
            let refused = try await server.open("/\(TestServer.pathSegment(decomposed))/\(claimsComposed)")
            guard case .refused(let refusal) = refused else {
                Issue.record("a token for one spelling opened the other")
                return
            }
            #expect(refusal.status == 403)
        }
    }

    /// The last socket of a channel leaves (UNLISTEN goes out) while the next one arrives:
    /// the newcomer must not be told "open" before the channel is LISTENed again.
    @Test func socketArrivingDuringUnlistenStillReceives() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            var client = try await server.connect(channel: channel, mode: "r")
            for i in 0..<300 {
                try await db.notify(channel, "n\(i)")
                #expect(try await client.nextText(timeout: 5) == "n\(i)")
                await client.disconnect()
                client = try await server.connect(channel: channel, mode: "r")
            }
        }
    }
}
