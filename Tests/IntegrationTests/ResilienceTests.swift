import BridgeTestSupport
import Foundation
import NIOCore
import Logging
import PostgresWebSockets
import Testing

/// Database outages against a PostgreSQL that the tests stop, kill and restart. Each test
/// has a cluster of its own, so nothing else notices.
@Suite struct ResilienceTests {
    @Test func startsWithoutDatabaseAndServesOnceItIsUp() async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        try await cluster.stopServer()
        try await TestServer.with(databaseURI: cluster.uri, waitForDatabase: false) { server in
            let unavailable = try await HTTPGet.fetch(port: server.port, path: "/health")
            #expect(unavailable.status == 503)
            #expect(try JSONParser.parse(unavailable.body)["database"] == .string("unavailable"))

            let channel = uniqueChannel()
            let reader = try await server.connect(channel: channel, mode: "r")
            let writer = try await server.connect(channel: channel, mode: "w")
            for i in 0..<3 { try await writer.send(text: "queued-\(i)") }

            try await server.log.waitForRecord(with: [.database: "unavailable"])
            try await cluster.startServerAgain()
            try await server.log.waitForRecord(with: [.database: "restored"], timeout: 30)
            // One warning for the whole outage, however many retries it took.
            #expect(server.log.records(with: [.database: "unavailable"]).count == 1)

            for i in 0..<3 {
                let envelope = try JSONParser.parse(try await reader.nextText(timeout: 20))
                #expect(envelope["payload"] == .string("queued-\(i)"))
            }
            let db = try TestDatabase(uri: cluster.uri)
            try await db.notify(channel, "after start")
            #expect(try await reader.nextText() == "after start")
            let healthy = try await HTTPGet.fetch(port: server.port, path: "/health")
            #expect(healthy.status == 200)
            #expect(try JSONParser.parse(healthy.body)["database"] == .string("connected"))
        }
    }

    /// A durable channel loses nothing to an outage: client messages wait and get their
    /// offsets once committed, and a server whose listener comes back reads from the table
    /// what was published meanwhile (by another server or by SQL), in offset order.
    @Test func durableChannelsLoseNothingToARestart() async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        let durable: (inout Configuration) -> Void = { $0.durable.mode = .on }
        try await TestServer.with(databaseURI: cluster.uri, durable) { reading in
            try await TestServer.with(databaseURI: cluster.uri, durable) { writing in
                let db = try TestDatabase(uri: cluster.uri)
                let channel = uniqueChannel()
                _ = try await db.query("SELECT pgws.make_durable($1)", [channel])
                let token = TestTokens.mint(mode: "rw")
                let reader = try await WebSocketClient.connectV1(port: reading.port, path: "/\(channel)", token: token)
                _ = try await reader.next(type: "subscribed")
                let writer = try await WebSocketClient.connectV1(port: writing.port, path: "/", token: token)
                _ = try await db.query("SELECT pgws.publish($1, 'before')", [channel])
                #expect(try await reader.next(type: "message")["offset"] == .string("1"))

                try await cluster.stopServer()
                try await reading.log.waitForRecord(with: [.database: "lost"])
                try await writing.log.waitForRecord(with: [.database: "lost"])
                for i in 1...3 {
                    try await writer.send(
                        json: #"{"type":"publish","channel":"\#(channel)","payload":"queued-\#(i)","ref":\#(i)}"#)
                }
                try await cluster.startServerAgain()
                let sql = try TestDatabase(uri: cluster.uri)
                _ = try await sql.query("SELECT pgws.publish($1, 'by sql')", [channel])

                var offsets: [String] = []
                for _ in 1...3 {
                    let published = try await writer.next(type: "published", timeout: 30)
                    offsets.append(published["offset"]?.stringValue ?? "")
                }
                var payloads: [String] = []
                for expected in 2...5 {
                    let message = try await reader.next(type: "message", timeout: 30)
                    #expect(message["offset"] == .string("\(expected)"), "every message once, in offset order")
                    let payload = message["payload"]?.stringValue ?? ""
                    payloads.append(
                        payload.hasPrefix("{") ? (try JSONParser.parse(payload)["payload"]?.stringValue ?? "") : payload
                    )
                }
                #expect(Set(payloads) == ["queued-1", "queued-2", "queued-3", "by sql"])
                #expect(payloads.filter { $0.hasPrefix("queued") } == ["queued-1", "queued-2", "queued-3"])
                #expect(Set(offsets).isSubset(of: ["2", "3", "4", "5"]) && Set(offsets).count == 3)
                try await reader.expectSilence(for: 0.3)
            }
        }
    }

    /// Notifications committed while the listener was away are lost: a `since` from before
    /// the outage cannot be answered in full, and the server says so; one from after it can.
    @Test func resumeAcrossAListenerOutageIsNotRecovered() async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        try await TestServer.with(databaseURI: cluster.uri) { server in
            let db = try TestDatabase(uri: cluster.uri)
            let channel = uniqueChannel()
            let token = TestTokens.mint(mode: "r")
            let reader = try await WebSocketClient.connectV1(port: server.port, path: "/\(channel)", token: token)
            _ = try await reader.next(type: "subscribed")
            try await db.notify(channel, "before")
            let before = try #require(try await reader.next(type: "message")["offset"]?.stringValue)
            _ = try await db.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'postgres-websockets listener'"
            )
            try await server.log.waitForRecord(with: [.database: "restored"])
            try await server.waitUntilDatabaseUp()
            try await db.notify(channel, "after")
            let after = try #require(try await reader.next(type: "message")["offset"]?.stringValue)

            let late = try await WebSocketClient.connectV1(port: server.port, path: "/", token: token)
            try await late.send(json: #"{"type":"subscribe","channel":"\#(channel)","since":"\#(before)"}"#)
            let replayed = try await late.nextJSON()
            #expect(replayed["payload"] == .string("after"), "what the log holds is still sent")
            let gap = try await late.next(type: "subscribed")
            #expect(gap["recovered"] == .bool(false), "the outage lies after that offset")

            let current = try await WebSocketClient.connectV1(port: server.port, path: "/", token: token)
            try await current.send(json: #"{"type":"subscribe","channel":"\#(channel)","since":"\#(after)"}"#)
            let whole = try await current.nextJSON()
            #expect(whole["type"] == .string("subscribed"), "nothing after that offset to replay")
            #expect(whole["recovered"] == .bool(true))
        }
    }

    @Test func listenerRecoversAfterItsBackendIsTerminated() async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        try await TestServer.with(databaseURI: cluster.uri) { server in
            let db = try TestDatabase(uri: cluster.uri)
            let (a, b) = (uniqueChannel(), uniqueChannel())
            let readers = [
                try await server.connect(channel: a, mode: "r"), try await server.connect(channel: a, mode: "r"),
                try await server.connect(channel: b, mode: "r"),
            ]
            let terminated = try await db.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'postgres-websockets listener'"
            )
            #expect(terminated.count == 1)
            try await server.log.waitForRecord(with: [.database: "lost"])
            let restored = try await server.log.waitForRecord(with: [.database: "restored"])
            #expect(restored[.outageSeconds].flatMap(Double.init) != nil)
            try await server.waitUntilDatabaseUp()
            #expect(Set(try await server.socketChannelsListened()) == [a, b])
            try await db.notify(a, "to a")
            try await db.notify(b, "to b")
            #expect(try await readers[0].nextText() == "to a")
            #expect(try await readers[1].nextText() == "to a")
            #expect(try await readers[2].nextText() == "to b")
        }
    }

    /// A handshake whose LISTEN PostgreSQL never confirms in time gets 408; its channel and
    /// connection slot are given back, so nothing stays LISTENed on its behalf.
    @Test func handshakeTimingOutDuringItsListenLeavesNothingBehind() async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        try await TestServer.with(
            databaseURI: cluster.uri,
            {
                // The 408 falls between the handshake timeout and the listener giving its frozen
                // session up: a window of two seconds, which a loaded machine does not miss.
                $0.limits.handshakeTimeout = .fromSeconds(1)
                $0.listener.probeTimeout = .seconds(3)
                $0.limits.maxLagDuration = .milliseconds(200)  // the channel is let go soon after
            }
        ) {
            server in
            let db = try TestDatabase(uri: cluster.uri)
            let channel = uniqueChannel()
            var frozen: [Int32] = []
            defer { frozen.forEach { kill($0, SIGCONT) } }
            // The 408 must fall after the request was read and before the listener gives its
            // frozen session up (3 s without an answer). A loaded machine can still miss that
            // window; then the attempt held nothing, and the next one tries again.
            var refusedWhileListening = false
            for _ in 0..<5 where !refusedWhileListening {
                try await waitUntil(timeout: 20, "one live listener session") {
                    let sessions = try await db.backendPIDs(application: "postgres-websockets listener")
                    return server.bridge.isDatabaseUp && sessions.count == 1
                }
                let listener = try await db.backendPIDs(application: "postgres-websockets listener")
                frozen += listener
                listener.forEach { kill($0, SIGSTOP) }
                let outcome = try await server.open("/\(channel)/\(TestTokens.mint(mode: "r"))")
                listener.forEach { kill($0, SIGCONT) }
                switch outcome {
                case .refused(let refusal) where refusal.status == 408:
                    refusedWhileListening = true
                case .refused(let refusal):
                    // Closed unanswered: the request itself came after the time limit.
                    #expect(refusal.status == 0, "\(refusal)")
                case .upgraded(let client):
                    // The listener was replaced first and let the socket in.
                    await client.disconnect()
                }
            }
            #expect(refusedWhileListening)
            // The frozen listener may be replaced meanwhile; a query it drops counts as "not yet".
            try await waitUntil(timeout: 10, "the refused socket's channel to be let go") {
                (try? await server.socketChannelsListened()) == []
            }
            // Read in the process (a /health request could itself time out on a loaded machine).
            try await waitUntil(timeout: 20, "its connection slot to be given back") {
                server.bridge.openConnections == 0
            }
        }
    }

    @Test(arguments: ["fast", "immediate"])
    func postgresRestartLosesNoClientMessage(mode: String) async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        try await TestServer.with(databaseURI: cluster.uri) { server in
            let channel = uniqueChannel()
            let reader = try await server.connect(channel: channel, mode: "r")
            let writer = try await server.connect(channel: channel, mode: "w")
            try await cluster.stopServer(mode: mode)
            try await server.log.waitForRecord(with: [.database: "lost"])
            let unavailable = try await HTTPGet.fetch(port: server.port, path: "/health")
            #expect(unavailable.status == 503)
            for i in 0..<50 { try await writer.send(text: "during-\(i)") }
            try await cluster.startServerAgain()
            try await server.log.waitForRecord(with: [.database: "restored"], timeout: 30)
            for i in 0..<50 {
                let envelope = try JSONParser.parse(try await reader.nextText(timeout: 20))
                #expect(envelope["payload"] == .string("during-\(i)"))
            }
            let db = try TestDatabase(uri: cluster.uri)
            try await db.notify(channel, "after restart")
            #expect(try await reader.nextText() == "after restart")
        }
    }

    @Test func fullQueueClosesTheSenderWith1013() async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        try await cluster.stopServer()
        try await TestServer.with(
            databaseURI: cluster.uri, waitForDatabase: false, { $0.notifier.maxPendingMessages = 5 }
        ) {
            server in
            let channel = uniqueChannel()
            let reader = try await server.connect(channel: channel, mode: "r")
            let writer = try await server.connect(channel: channel, mode: "w")
            for i in 0..<6 { try await writer.send(text: "m\(i)") }
            let close = try await writer.nextClose()
            #expect(close.code == 1013)
            #expect(close.reason == "database unavailable")
            try await cluster.startServerAgain()
            for i in 0..<5 {
                let envelope = try JSONParser.parse(try await reader.nextText(timeout: 30))
                #expect(envelope["payload"] == .string("m\(i)"))
            }
            try await reader.expectSilence(for: 0.5)  // the refused sixth never went out
        }
    }

    @Test func messageRejectedByPostgresClosesOnlyItsSender() async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        let admin = try TestDatabase(uri: cluster.uri)
        try await admin.query("CREATE DATABASE latin ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
        let latinURI = cluster.uri(database: "latin")
        try await TestServer.with(databaseURI: latinURI) { server in
            let channel = uniqueChannel()
            let reader = try await server.connect(channel: channel, mode: "r")
            let bad = try await server.connect(channel: channel, mode: "w")
            let good = try await server.connect(channel: channel, mode: "w")
            try await bad.send(text: "日本語 cannot be LATIN1")
            try await good.send(text: "plain ascii")
            let close = try await bad.nextClose()
            #expect(close.code == 1008)
            #expect(close.reason.contains("rejected by PostgreSQL"))
            let envelope = try JSONParser.parse(try await reader.nextText())
            #expect(envelope["payload"] == .string("plain ascii"))
            try await good.send(text: "still open")
            #expect(try JSONParser.parse(try await reader.nextText())["payload"] == .string("still open"))
        }
    }

    /// A silent network cut: the listener's backend is frozen (SIGSTOP), so the socket stays
    /// open but nothing answers. The liveness probe notices and the listener reconnects.
    @Test func unansweringListenerIsReplaced() async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        try await TestServer.with(databaseURI: cluster.uri) { server in
            let db = try TestDatabase(uri: cluster.uri)
            let channel = uniqueChannel()
            let reader = try await server.connect(channel: channel, mode: "r")
            let listener = try #require(try await db.backendPIDs(application: "postgres-websockets listener").first)
            kill(listener, SIGSTOP)
            defer { kill(listener, SIGCONT) }
            let lost = try await server.log.waitForRecord(with: [.database: "lost"])
            #expect(lost[.error]?.hasPrefix("no answer from PostgreSQL") == true)
            try await server.log.waitForRecord(with: [.database: "restored"])
            try await server.waitUntilDatabaseUp()
            try await db.notify(channel, "after the cut")
            #expect(try await reader.nextText() == "after the cut")
        }
    }

    /// The connections that send client messages are killed while messages flow: every
    /// message still arrives, in order (a batch caught mid-commit may arrive twice).
    @Test func notifierConnectionLossLosesNothing() async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        try await TestServer.with(databaseURI: cluster.uri) { server in
            let db = try TestDatabase(uri: cluster.uri)
            let channel = uniqueChannel()
            let reader = try await server.connect(channel: channel, mode: "r")
            let writer = try await server.connect(channel: channel, mode: "w")
            let count = 400
            for i in 0..<count {
                try await writer.send(text: "n\(i)")
                if i == 100 || i == 250 {
                    try await db.query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'postgres-websockets notifier'"
                    )
                }
            }
            var seen: [String] = []
            while Set(seen).count < count {
                let envelope = try JSONParser.parse(try await reader.nextText(timeout: 20))
                let payload = try #require(envelope["payload"]?.stringValue)
                if !seen.contains(payload) { seen.append(payload) }
            }
            #expect(seen == (0..<count).map { "n\($0)" })
            // The kills did hit batches: they failed and were sent again.
            #expect(server.log.records.contains { $0.level == .warning && $0[.lane] != nil && $0[.messages] != nil })
        }
    }

    /// PostgreSQL is up but cannot keep up (its notifier backends are frozen): writers are
    /// slowed down by TCP flow control, not closed, and nothing is lost.
    @Test func slowDatabaseSlowsWritersInsteadOfClosingThem() async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        try await TestServer.with(databaseURI: cluster.uri, { $0.notifier.maxPendingMessages = 40 }) { server in
            let db = try TestDatabase(uri: cluster.uri)
            let channel = uniqueChannel()
            let reader = try await server.connect(channel: channel, mode: "r")
            let writer = try await server.connect(channel: channel, mode: "w")
            try await writer.send(text: "m0")
            #expect(try JSONParser.parse(try await reader.nextText())["payload"] == .string("m0"))
            let backends = try await db.backendPIDs(application: "postgres-websockets notifier")
            #expect(!backends.isEmpty)
            backends.forEach { kill($0, SIGSTOP) }
            defer { backends.forEach { kill($0, SIGCONT) } }
            let count = 2_000
            // One write: the queue fills at once, long before the frozen batch's answer timeout.
            try await writer.send(texts: (1..<count).map { "m\($0)" })
            // The server stops reading once its queue is half full: it never holds more.
            try await waitUntil(timeout: 30, "the queue to fill") { server.bridge.queuedMessages >= 20 }
            #expect(server.bridge.queuedMessages <= 40)
            backends.forEach { kill($0, SIGCONT) }
            for i in 1..<count {
                let envelope = try JSONParser.parse(try await reader.nextText(timeout: 20))
                #expect(envelope["payload"] == .string("m\(i)"))
            }
            #expect(server.log.records(with: [.database: "unavailable"]).isEmpty)
        }
    }
}
