import BridgeTestSupport
import Foundation
import NIOCore
import PostgresWebSockets
import Testing

/// Durable channels (`durable = on`): messages stored in PostgreSQL by `pgws.publish` in the
/// writer's transaction, delivered at commit with gapless offsets, replayed from the table
/// on any server. Each test uses channels of its own on the shared cluster, or a database
/// of its own where the schema itself is under test.
@Suite struct DurableChannelTests {
    func db() async throws -> TestDatabase { try await TestDatabase(uri: TemporaryPostgres.sharedURI()) }

    static func durable(_ config: inout Configuration) {
        config.durable.mode = .on
    }

    /// The schema, as a server with durable = on installs it.
    func installSchema() async throws {
        try await TestServer.with(Self.durable) { _ in }
    }

    func makeDurable(_ db: TestDatabase, _ channel: String, options: String = "") async throws {
        _ = try await db.query("SELECT pgws.make_durable($1\(options))", [channel])
    }

    func publish(_ db: TestDatabase, _ channel: String, _ payload: String) async throws -> String {
        try #require(try await db.query("SELECT pgws.publish($1, $2)", [channel, payload]).first?.first ?? nil)
    }

    @Test func deliveredAtCommitNeverOnRollbackWithGaplessOffsets() async throws {
        try await TestServer.with(Self.durable) { server in
            let db = try await db()
            let channel = uniqueChannel()
            try await makeDurable(db, channel)
            let token = TestTokens.mint(mode: "r")
            let reader = try await WebSocketClient.connectV1(port: server.port, path: "/\(channel)", token: token)
            let subscribed = try await reader.next(type: "subscribed")
            #expect(subscribed["offset"] == .null, "nothing published yet")
            let raw = try await server.connect(channel: channel, mode: "r")

            _ = try await db.query("BEGIN")
            _ = try await publish(db, channel, "rolled back")
            _ = try await db.query("ROLLBACK")
            _ = try await db.query("BEGIN")
            let offset = try await publish(db, channel, "committed")
            try await reader.expectSilence(for: 0.2)
            _ = try await db.query("COMMIT")
            #expect(offset == "1", "the rolled back message took no offset")
            let message = try await reader.nextJSON()
            #expect(message["type"] == .string("message"))
            #expect(message["payload"] == .string("committed"))
            #expect(message["offset"] == .string("1"))
            #expect(try await raw.nextText() == "committed", "raw sockets get the payload byte for byte")

            // A plain NOTIFY on a durable channel reaches raw sockets only.
            try await db.notify(channel, "plain")
            #expect(try await raw.nextText() == "plain")
            _ = try await publish(db, channel, "second")
            let second = try await reader.nextJSON()
            #expect(second["payload"] == .string("second"), "the plain NOTIFY never reached the v1 socket")
            #expect(second["offset"] == .string("2"))
            #expect(try await raw.nextText() == "second")
            let stored = try await db.query(
                "SELECT \"offset\", payload FROM pgws.messages WHERE channel = $1 ORDER BY 1", [channel])
            #expect(stored == [["1", "committed"], ["2", "second"]])
        }
    }

    /// The outbox bug: transactions that take offsets in one order and commit in another.
    /// The channel's row lock makes commit order and offset order the same.
    @Test func concurrentPublishersGetCommitOrderedGaplessOffsets() async throws {
        let uri = await TemporaryPostgres.sharedURI()
        try await TestServer.with(Self.durable) { first in
            try await TestServer.with(Self.durable) { second in
                let db = try await db()
                let channel = uniqueChannel()
                try await makeDurable(db, channel)
                let token = TestTokens.mint(mode: "r")
                let readers = [
                    try await WebSocketClient.connectV1(port: first.port, path: "/\(channel)", token: token),
                    try await WebSocketClient.connectV1(port: second.port, path: "/\(channel)", token: token),
                ]
                for reader in readers { _ = try await reader.next(type: "subscribed") }
                let (writers, each) = (8, 25)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for writer in 0..<writers {
                        group.addTask {
                            let connection = try TestDatabase(uri: uri)
                            for i in 0..<each {
                                _ = try await connection.query("BEGIN")
                                _ = try await connection.query(
                                    "SELECT pgws.publish($1, $2)", [channel, "w\(writer)-\(i)"])
                                _ = try await connection.query("SELECT pg_sleep(random() * 0.01)")
                                _ = try await connection.query("COMMIT")
                            }
                        }
                    }
                    try await group.waitForAll()
                }
                let total = writers * each
                for reader in readers {
                    var payloads: [String] = []
                    for expected in 1...total {
                        let message = try await reader.nextJSON(timeout: 20)
                        #expect(message["offset"] == .string("\(expected)"), "offsets 1...\(total) in order")
                        payloads.append(message["payload"]?.stringValue ?? "")
                    }
                    #expect(Set(payloads).count == total)
                    for writer in 0..<writers {
                        let own = payloads.filter { $0.hasPrefix("w\(writer)-") }
                        #expect(own == (0..<each).map { "w\(writer)-\($0)" }, "each writer's messages in its order")
                    }
                }
            }
        }
    }

    @Test func aMebibytePayloadReachesEveryReader() async throws {
        try await TestServer.with({
            Self.durable(&$0); $0.limits.maxMessageSize = 1 << 20
        }) { server in
            let db = try await db()
            let channel = uniqueChannel()
            try await makeDurable(db, channel)
            let token = TestTokens.mint(mode: "rw")
            let reader = try await WebSocketClient.connectV1(port: server.port, path: "/\(channel)", token: token)
            _ = try await reader.next(type: "subscribed")
            let raw = try await server.connect(channel: channel, mode: "r")
            _ = try await db.query("SELECT pgws.publish($1, repeat('x', 1048576))", [channel])
            let message = try await reader.nextJSON(timeout: 20)
            #expect(message["payload"]?.stringValue?.utf8.count == 1 << 20)
            #expect(message["offset"] == .string("1"))
            #expect(try await raw.nextText(timeout: 20).utf8.count == 1 << 20)
            do {
                _ = try await db.query("SELECT pgws.publish($1, repeat('x', 1048577))", [channel])
                Issue.record("a payload over 1 MiB was stored")
            } catch {
                #expect("\(error)".contains("exceeds 1 MiB"))
            }
            // A client message of 600 kB: stored, published with its offset, delivered.
            let big = String(repeating: "y", count: 600_000)
            try await reader.send(json: #"{"type":"publish","channel":"\#(channel)","payload":"\#(big)","ref":7}"#)
            var published: JSONValue? = nil
            var delivered: JSONValue? = nil
            while published == nil || delivered == nil {
                let frame = try await reader.nextJSON(timeout: 20)
                if frame["type"] == .string("published") { published = frame }
                if frame["type"] == .string("message") { delivered = frame }
            }
            #expect(published?["offset"] == .string("2"))
            #expect(delivered?["offset"] == .string("2"))
            let envelope = try JSONParser.parse(try #require(delivered?["payload"]?.stringValue))
            #expect(envelope["payload"] == .string(big))
        }
    }

    @Test func resumeOnAnotherServerAndAfterARestart() async throws {
        try await installSchema()
        let db = try await db()
        let channel = uniqueChannel()
        try await makeDurable(db, channel)
        let token = TestTokens.mint(mode: "r")
        var last = ""
        try await TestServer.with(Self.durable) { first in
            let client = try await WebSocketClient.connectV1(port: first.port, path: "/\(channel)", token: token)
            _ = try await client.next(type: "subscribed")
            for i in 1...3 { _ = try await publish(db, channel, "m\(i)") }
            for i in 1...3 {
                let message = try await client.nextJSON()
                #expect(message["payload"] == .string("m\(i)"))
                last = message["offset"]?.stringValue ?? ""
            }
            await client.disconnect()
        }
        #expect(last == "3")
        for i in 4...6 { _ = try await publish(db, channel, "m\(i)") }
        // Another server, which never had the channel: the missed messages come from the table.
        try await TestServer.with(Self.durable) { second in
            let client = try await WebSocketClient.connectV1(port: second.port, path: "/", token: token)
            try await client.send(json: #"{"type":"subscribe","channel":"\#(channel)","since":"\#(last)","ref":1}"#)
            for i in 4...6 {
                let message = try await client.nextJSON()
                #expect(message["payload"] == .string("m\(i)"))
                #expect(message["offset"] == .string("\(i)"))
            }
            let subscribed = try await client.nextJSON()
            #expect(subscribed["type"] == .string("subscribed"))
            #expect(subscribed["recovered"] == .bool(true))
            #expect(subscribed["offset"] == .string("6"))
            _ = try await publish(db, channel, "m7")
            let live = try await client.nextJSON()
            #expect(live["payload"] == .string("m7"))
            #expect(live["offset"] == .string("7"))
        }
        // A server started after all that: nothing missed since 7.
        try await TestServer.with(Self.durable) { third in
            let client = try await WebSocketClient.connectV1(port: third.port, path: "/", token: token)
            try await client.send(json: #"{"type":"subscribe","channel":"\#(channel)","since":"7"}"#)
            let subscribed = try await client.nextJSON()
            #expect(subscribed["type"] == .string("subscribed"))
            #expect(subscribed["recovered"] == .bool(true))
            _ = try await publish(db, channel, "m8")
            #expect(try await client.nextJSON()["offset"] == .string("8"))
        }
    }

    @Test func anEventStreamResumesFromTheTable() async throws {
        try await installSchema()
        let db = try await db()
        let channel = uniqueChannel()
        try await makeDurable(db, channel)
        for i in 1...4 { _ = try await publish(db, channel, "e\(i)") }
        try await TestServer.with(Self.durable) { server in
            let stream = try await EventStreamClient.open(
                port: server.port, path: "/\(channel)/\(TestTokens.mint(mode: "r"))", headers: [("Last-Event-ID", "2")])
            #expect(stream.status == 200)
            #expect(try await stream.nextEvent() == .event(id: "3", type: nil, data: "e3"))
            #expect(try await stream.nextEvent() == .event(id: "4", type: nil, data: "e4"))
            _ = try await publish(db, channel, "e5")
            #expect(try await stream.nextEvent() == .event(id: "5", type: nil, data: "e5"))
            await stream.close()
        }
    }

    @Test func makeDurableAndMakeEphemeralTakeEffectWithoutARestart() async throws {
        try await TestServer.with(Self.durable) { server in
            let db = try await db()
            let channel = uniqueChannel()
            let reader = try await WebSocketClient.connectV1(
                port: server.port, path: "/\(channel)", token: TestTokens.mint(mode: "r"))
            _ = try await reader.next(type: "subscribed")
            try await db.notify(channel, "ephemeral")
            let before = try await reader.nextJSON()
            #expect(before["payload"] == .string("ephemeral"))
            #expect(before["offset"]?.stringValue?.contains(":") == true, "an in-memory offset")

            try await makeDurable(db, channel)
            // The server learns of it from the control channel; publishing right away must not lose it.
            _ = try await publish(db, channel, "stored")
            let stored = try await reader.nextJSON()
            #expect(stored["payload"] == .string("stored"))
            #expect(stored["offset"] == .string("1"))

            _ = try await db.query("SELECT pgws.make_ephemeral($1)", [channel])
            #expect(try await db.query("SELECT count(*) FROM pgws.messages WHERE channel = $1", [channel]) == [["0"]])
            // Committed after the change: the server sees them in that order.
            try await db.notify(channel, "ephemeral again")
            let after = try await reader.nextJSON()
            #expect(after["payload"] == .string("ephemeral again"))
        }
    }

    @Test func clientMessagesAreStoredWithTheirOffset() async throws {
        try await TestServer.with(Self.durable) { server in
            let db = try await db()
            let channel = uniqueChannel()
            try await makeDurable(db, channel)
            let v1 = try await WebSocketClient.connectV1(
                port: server.port, path: "/\(channel)", token: TestTokens.mint(mode: "rw"))
            _ = try await v1.next(type: "subscribed")
            try await v1.send(json: #"{"type":"publish","channel":"\#(channel)","payload":"from v1","ref":"a"}"#)
            var published: JSONValue? = nil
            var delivered: JSONValue? = nil
            while published == nil || delivered == nil {
                let frame = try await v1.nextJSON()
                if frame["type"] == .string("published") { published = frame }
                if frame["type"] == .string("message") { delivered = frame }
            }
            #expect(published?["offset"] == .string("1"))
            #expect(published?["ref"] == .string("a"))
            #expect(delivered?["offset"] == .string("1"))
            let raw = try await server.connect(channel: channel, mode: "w")
            try await raw.send(text: "from raw")
            let message = try await v1.next(type: "message")
            #expect(message["offset"] == .string("2"))
            let rows = try await db.query(
                "SELECT payload::json->>'payload' FROM pgws.messages WHERE channel = $1 ORDER BY \"offset\"", [channel])
            #expect(rows == [["from v1"], ["from raw"]], "stored with the envelope, as NOTIFY would carry it")
        }
    }

    @Test func pruningKeepsTheNewestAndAResumeSaysWhatIsGone() async throws {
        try await TestServer.with({
            Self.durable(&$0)
            $0.durable.pruneInterval = .milliseconds(100)
        }) { server in
            let db = try await db()
            let channel = uniqueChannel()
            try await makeDurable(db, channel, options: ", max_messages => 3")
            for i in 1...10 { _ = try await publish(db, channel, "p\(i)") }
            try await waitUntil(timeout: 20, "pruning to 3 messages", every: 0.05) {
                try await db.query("SELECT count(*) FROM pgws.messages WHERE channel = $1", [channel]) == [["3"]]
            }
            let kept = try await db.query(
                "SELECT \"offset\" FROM pgws.messages WHERE channel = $1 ORDER BY 1", [channel])
            #expect(kept == [["8"], ["9"], ["10"]])
            let client = try await WebSocketClient.connectV1(
                port: server.port, path: "/", token: TestTokens.mint(mode: "r"))
            try await client.send(json: #"{"type":"subscribe","channel":"\#(channel)","since":"1"}"#)
            for i in 8...10 { #expect(try await client.nextJSON()["payload"] == .string("p\(i)")) }
            let subscribed = try await client.nextJSON()
            #expect(subscribed["type"] == .string("subscribed"))
            #expect(subscribed["recovered"] == .bool(false), "2 to 7 were pruned")
        }
    }

    @Test func aSlowReaderCatchesUpFromTheTableInsteadOfBeingCut() async throws {
        try await TestServer.with({
            Self.durable(&$0)
            $0.limits.maxLag = 1 << 20
            $0.limits.maxSocketBuffer = 16 << 10
            // The reader does not read, so it cannot answer pings; a sanitizer's run is long.
            $0.limits.pingInterval = .fromSeconds(600)
        }) { server in
            let db = try await db()
            let channel = uniqueChannel()
            try await makeDurable(db, channel)
            let reader = try await WebSocketClient.connectV1(
                port: server.port, path: "/\(channel)", token: TestTokens.mint(mode: "r"))
            _ = try await reader.next(type: "subscribed")
            try await reader.pauseReading()
            // 16 MB: more than the kernel buffers of a socket that does not read can absorb,
            // and 16 times the window.
            let count = 16_000
            _ = try await db.query(
                "SELECT count(pgws.publish($1, lpad(g::text, 1000, 'x'))) FROM generate_series(1, \(count)) AS g",
                [channel])
            try await waitUntil(timeout: 30, "the reader to leave the log for the table") {
                await server.bridge.deliveryCounters().fromTable > 0
            }
            try await reader.resumeReading()
            for expected in 1...count {
                let message = try await reader.nextJSON(timeout: 30)
                guard message["offset"] == .string("\(expected)") else {
                    Issue.record("expected offset \(expected), got \(message)")
                    return
                }
            }
            #expect(await server.bridge.deliveryCounters().cutOff == 0)
        }
    }

    @Test func twoServersInstallTheSchemaAtOnce() async throws {
        let uri = try await TemporaryPostgres.freshDatabase()
        async let first = TestServer.start(databaseURI: uri, Self.durable)
        async let second = TestServer.start(databaseURI: uri, Self.durable)
        let servers = try await [first, second]
        let db = try TestDatabase(uri: uri)
        #expect(try await db.query("SELECT version FROM pgws.schema_version") == [["\(DurableSchema.version)"]])
        let channel = uniqueChannel()
        try await makeDurable(db, channel)
        #expect(try await publish(db, channel, "installed") == "1")
        for server in servers { await server.shutdown() }
    }

    @Test func checkModeRefusesAMissingOrOtherSchemaVersion() async throws {
        let uri = try await TemporaryPostgres.freshDatabase()
        let missing = try await TestServer.start(databaseURI: uri, waitForDatabase: false) { $0.durable.mode = .check }
        let gaveUp = try await missing.log.waitForRecord(with: [.database: "unavailable"])
        #expect(gaveUp[.error]?.contains("no pgws schema") == true)
        await missing.shutdown()

        let db = try TestDatabase(uri: uri)
        try await db.run(script: DurableSchema.script)
        try await TestServer.with(databaseURI: uri, { $0.durable.mode = .check }) { server in
            #expect(server.bridge.isDatabaseUp, "the right version is accepted")
        }
        _ = try await db.query("UPDATE pgws.schema_version SET version = 99")
        let newer = try await TestServer.start(databaseURI: uri, waitForDatabase: false) { $0.durable.mode = .check }
        let refused = try await newer.log.waitForRecord(with: [.database: "unavailable"])
        #expect(
            refused[.error]
                == "the database has pgws schema version 99, this server needs version \(DurableSchema.version)")
        await newer.shutdown()
    }
}
