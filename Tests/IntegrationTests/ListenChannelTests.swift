import BridgeTestSupport
import Foundation
import PostgresWebSockets
import Testing

/// The listen channel of postgres-websockets 0.10 and later: SQL publishes on one channel and
/// the JSON `channel` field routes; client messages and meta events can go the same way.
/// Each test has a listen channel of its own, so servers of parallel tests do not mix.
@Suite struct ListenChannelTests {
    @Test func sqlOnTheListenChannelIsRoutedByItsChannelField() async throws {
        let listen = uniqueChannel("listen")
        try await TestServer.with({ $0.channels.listenChannel = listen }) { server in
            let chat = uniqueChannel()
            let reader = try await server.connect(channel: chat, mode: "r")
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            let payload = #"{"channel":"\#(chat)","payload":"hello there"}"#
            try await db.notify(listen, payload)
            #expect(try await reader.nextText() == payload, "the whole raw text, byte for byte")
            let spaced = " \n{ \"payload\" : 1, \"channel\" : \"\(chat)\" }\t"
            try await db.notify(listen, spaced)
            #expect(try await reader.nextText() == spaced, "JSON surrounded by whitespace is routed")
            try await db.notify(chat, "plain NOTIFY")
            #expect(try await reader.nextText() == "plain NOTIFY", "NOTIFY on the channel itself still works")
        }
    }

    @Test func otherPayloadsGoToReadersOfAChannelNamedLikeTheListenChannel() async throws {
        let listen = uniqueChannel("listen")
        try await TestServer.with({ $0.channels.listenChannel = listen }) { server in
            let chat = uniqueChannel()
            let listenReader = try await server.connect(channel: listen, mode: "r")
            let chatReader = try await server.connect(channel: chat, mode: "r")
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            let unroutable = [
                #"{"channel":"\#(chat)"} trailing"#, #"{"channel":5}"#, #"["\#(chat)"]"#, #""\#(chat)""#, "not json",
                #"{"payload":"no channel"}"#,
            ]
            for payload in unroutable { try await db.notify(listen, payload) }
            let routed = #"{"channel":"\#(listen)","payload":"routed to the listen channel's own name"}"#
            try await db.notify(listen, routed)
            let marker = #"{"channel":"\#(chat)","payload":"marker"}"#
            try await db.notify(listen, marker)
            for payload in unroutable + [routed] {
                #expect(try await listenReader.nextText() == payload)
            }
            #expect(try await chatReader.nextText() == marker, "none of the unroutable payloads reached chat")
        }
    }

    @Test func aRoutedPayloadDoesNotAlsoReachTheListenChannelsReaders() async throws {
        let listen = uniqueChannel("listen")
        try await TestServer.with({ $0.channels.listenChannel = listen }) { server in
            let chat = uniqueChannel()
            let listenReader = try await server.connect(channel: listen, mode: "r")
            let chatReader = try await server.connect(channel: chat, mode: "r")
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            try await db.notify(listen, #"{"channel":"\#(chat)"}"#)
            try await db.notify(listen, "marker")
            #expect(try await chatReader.nextText() == #"{"channel":"\#(chat)"}"#)
            #expect(try await listenReader.nextText() == "marker")
        }
    }

    /// publish-to = listen-channel: the envelope goes out on the listen channel, where SQL
    /// consumers of upstream's design read it, and reaches readers exactly once, the sender
    /// included; audit copies are unchanged; meta events take the same way.
    @Test func clientMessagesAndMetaEventsThroughTheListenChannel() async throws {
        let listen = uniqueChannel("listen")
        let audit = uniqueChannel("audit")
        let meta = uniqueChannel("meta")
        try await TestServer.with({
            $0.channels.listenChannel = listen
            $0.channels.publishTo = .listenChannel
            $0.channels.auditChannel = audit
            $0.channels.metaChannel = meta
        }) { server in
            let chat = uniqueChannel()
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            try await db.listen(listen)
            try await db.listen(audit)
            let metaReader = try await server.connect(channel: meta, mode: "r")
            let writer = try await server.connect(channel: chat, mode: "rw")

            // The meta reader may see its own ConnectionOpen first.
            var opened = try JSONParser.parse(try await metaReader.nextText())
            if opened["payload"] == .string(meta) { opened = try JSONParser.parse(try await metaReader.nextText()) }
            #expect(opened["event"] == .string("ConnectionOpen"))
            #expect(opened["channel"] == .string(meta))
            #expect(opened["payload"] == .string(chat))

            try await writer.send(text: "hi")
            let echoed = try await writer.nextText()
            let envelope = try JSONParser.parse(echoed)
            #expect(envelope["event"] == .string("WebsocketMessage"))
            #expect(envelope["channel"] == .string(chat))
            #expect(envelope["payload"] == .string("hi"))
            try await db.notify(chat, "after")
            #expect(try await writer.nextText() == "after", "the sender got its message exactly once")

            var seen: [String: [String]] = [:]
            // Two ConnectionOpen events (the meta reader's and the writer's), the message, its audit copy.
            for received in try await db.notifications(count: 4) {
                seen[received.channel, default: []].append(received.payload)
            }
            #expect(seen[audit] == [echoed], "the audit copy is unchanged")
            #expect(seen[listen]?.count == 3, "the meta events and the message, on the listen channel")
            #expect(seen[listen]?.contains(echoed) == true)
            #expect(seen[listen]?.filter { $0.contains("ConnectionOpen") }.count == 2)
        }
    }

    /// publish-to = channel (the default): client messages are NOTIFYed on their channel,
    /// not on the listen channel.
    @Test func byDefaultClientMessagesGoToTheirChannel() async throws {
        let listen = uniqueChannel("listen")
        try await TestServer.with({ $0.channels.listenChannel = listen }) { server in
            let chat = uniqueChannel()
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            try await db.listen(listen)
            try await db.listen(chat)
            let writer = try await server.connect(channel: chat, mode: "w")
            try await writer.send(text: "hi")
            let received = try await db.nextNotification()
            #expect(received.channel == chat)
            #expect(try await db.drainNotifications().isEmpty)
        }
    }

    /// The listen channel is LISTENed from the start, with no socket at all (and so is the
    /// channel revocations are signalled on).
    @Test func theListenChannelIsAlwaysListened() async throws {
        let listen = uniqueChannel("listen")
        try await TestServer.with({ $0.channels.listenChannel = listen }) { server in
            let listening = try await server.bridge.listeningChannels()
            #expect(Set(listening) == [listen, TestServer.revokeChannel])
        }
    }
}
