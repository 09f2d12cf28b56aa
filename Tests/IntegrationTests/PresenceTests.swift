import BridgeTestSupport
import Foundation
import PostgresWebSockets
import Testing

/// Presence kept in PostgreSQL: `pgws.presence` rows per socket and channel, joins and leaves
/// across servers, member lists for `pgws.v1` clients and operators.
@Suite struct PresenceTests {
    static func presence(_ config: inout Configuration) {
        config.presence.isEnabled = true
        config.presence.fields = ["name"]
        config.metrics.port = 0
    }

    static func token(_ claims: [(String, JSONValue)], mode: String = "rw") -> String {
        TestTokens.mint(mode: mode, extra: claims)
    }

    /// The joins and leaves PostgreSQL announces for `channel`, from its own session.
    struct Signals {
        let db: TestDatabase
        let channel: String

        static func listen(on channel: String) async throws -> Signals {
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            try await db.listen("pgws:presence")
            return Signals(db: db, channel: channel)
        }

        /// The next change of the channel: its type and member id.
        func next(timeout: Double = patience(10)) async throws -> (type: String, id: String) {
            let deadline = Deadline(seconds: timeout)
            while true {
                let signal = try JSONParser.parse(
                    try await db.nextNotification(timeout: try deadline.remaining()).payload)
                guard signal["channel"]?.stringValue == channel else { continue }
                return (
                    signal["type"]?.stringValue ?? "", signal["member"]?["id"]?.stringValue ?? "?"
                )
            }
        }
    }

    /// A v1 socket's next join or leave: its type and member.
    static func nextChange(_ socket: WebSocketClient, timeout: Double = patience(10)) async throws -> (
        type: String, member: JSONValue
    ) {
        let deadline = Deadline(seconds: timeout)
        while true {
            let frame = try await socket.nextJSON(timeout: try deadline.remaining())
            guard let type = frame["type"]?.stringValue, type == "join" || type == "leave" else { continue }
            return (type, frame["member"] ?? .null)
        }
    }

    static func member(_ id: String, name: String? = nil) -> JSONValue {
        .object([("id", .string(id)), ("claims", .object(name.map { [("name", .string($0))] } ?? []))])
    }

    @Test func joinsLeavesAndMembersAcrossTwoServers() async throws {
        try await TestServer.with(Self.presence) { first in
            try await TestServer.with(Self.presence) { second in
                let channel = uniqueChannel("room")
                let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
                let alice = uniqueChannel("alice")
                let bob = uniqueChannel("bob")
                let carol = uniqueChannel("carol")
                let aliceToken = Self.token([
                    ("sub", .string(alice)), ("name", .string("Alice")), ("secret", .string("s")),
                ])
                let bobToken = Self.token([("sub", .string(bob))])

                let watcher = try await WebSocketClient.connectV1(port: first.port, path: "/", token: aliceToken)
                try await watcher.send(json: #"{"type":"subscribe","channel":"\#(channel)","presence":true,"ref":1}"#)
                _ = try await watcher.next(type: "subscribed")
                // Its own join, with the shared claims only.
                var change = try await Self.nextChange(watcher)
                #expect(change.type == "join" && change.member == Self.member(alice, name: "Alice"), "\(change)")

                // A raw socket on the other server counts; so does a socket without the claim, not.
                let bobOnSecond = try await second.connect("/\(channel)/\(bobToken)")
                let anonymous = try await second.connect("/\(channel)/\(Self.token([]))")
                change = try await Self.nextChange(watcher)
                #expect(change.type == "join" && change.member == Self.member(bob), "\(change)")

                // Bob's second socket is no new member; his first one closing is no leave.
                let bobOnFirst = try await first.connect("/\(channel)/\(bobToken)")
                let rows = "SELECT count(*) FROM pgws.presence WHERE channel = $1 AND member_id = to_jsonb($2::text)"
                try await waitUntil(timeout: patience(10), "bob's two rows") {
                    try await db.query(rows, [channel, bob]).first?.first == "2"
                }
                try await bobOnSecond.close()
                try await waitUntil(timeout: patience(10), "bob's first row gone") {
                    try await db.query(rows, [channel, bob]).first?.first == "1"
                }
                // Committed after that removal: a leave of bob would come before this join.
                let carolSocket = try await first.connect("/\(channel)/\(Self.token([("sub", .string(carol))]))")
                change = try await Self.nextChange(watcher)
                #expect(change.type == "join" && change.member == Self.member(carol), "\(change)")

                // Every member on both servers, for a v1 client of either.
                let asker = try await WebSocketClient.connectV1(port: second.port, path: "/", token: bobToken)
                try await asker.send(json: #"{"type":"presence","channel":"\#(channel)","ref":"p"}"#)
                let answer = try await asker.next(type: "presence")
                #expect(answer["ref"] == .string("p") && answer["channel"] == .string(channel))
                guard case .array(let members)? = answer["members"] else {
                    throw WaitTimeout(what: "members in \(answer)")
                }
                let ids = Set(members.compactMap { $0["id"]?.stringValue })
                #expect(ids == [alice, bob, carol], "\(answer)")

                // The last socket of bob closes: he leaves.
                try await bobOnFirst.close()
                change = try await Self.nextChange(watcher)
                #expect(change.type == "leave" && change.member == Self.member(bob), "\(change)")
                try await carolSocket.close()
                change = try await Self.nextChange(watcher)
                #expect(change.type == "leave" && change.member == Self.member(carol), "\(change)")

                // Operators: the same list on the admin port, across servers; the public port has none.
                let adminPort = try #require(try await second.bridge.metricsPort())
                let listed = try await HTTPGet.fetch(port: adminPort, path: "/channels/\(channel)/presence")
                #expect(listed.status == 200 && listed.headers["content-type"] == "application/json")
                let body = try JSONParser.parse(listed.body)
                #expect(body["channel"] == .string(channel))
                #expect(body["members"] == .array([Self.member(alice, name: "Alice")]), "\(listed.body)")
                #expect(try await HTTPGet.fetch(port: second.port, path: "/channels/\(channel)/presence").status == 404)

                // In SQL, with every claim, for joins with the application's tables.
                let sql = try await db.query(
                    "SELECT claims->>'secret', member_id #>> '{}' FROM pgws.presence WHERE channel = $1", [channel])
                #expect(sql.count == 2, "alice's socket and the anonymous one: \(sql)")
                #expect(sql.contains { $0 == ["s", alice] })
                #expect(sql.contains { $0[1] == nil }, "the socket without sub has a row, as no member")
                _ = anonymous
            }
        }
    }

    @Test func unsubscribingLeavesAndStopsTheEvents() async throws {
        try await TestServer.with(Self.presence) { server in
            let channel = uniqueChannel("room")
            let signals = try await Signals.listen(on: channel)
            let dan = uniqueChannel("dan")
            let socket = try await WebSocketClient.connectV1(
                port: server.port, path: "/", token: Self.token([("sub", .string(dan))]))
            try await socket.send(json: #"{"type":"subscribe","channel":"\#(channel)","presence":true}"#)
            _ = try await socket.next(type: "subscribed")
            #expect(try await signals.next() == ("join", dan))
            try await socket.send(json: #"{"type":"unsubscribe","channel":"\#(channel)"}"#)
            _ = try await socket.next(type: "unsubscribed")
            #expect(try await signals.next() == ("leave", dan))
        }
    }

    @Test func aKilledServersRowsAreSweptByTheOthers() async throws {
        try await TestServer.with(Self.presence) { survivor in
            let channel = uniqueChannel("room")
            let signals = try await Signals.listen(on: channel)
            let eve = uniqueChannel("eve")
            let environment = [
                "PGWS_DB_URI": await TemporaryPostgres.sharedURI(), "PGWS_JWT_SECRET": TestTokens.secret,
                "PGWS_PRESENCE": "on",
            ]
            let doomed = try await ServerProcess(environment: environment)
            defer { doomed.signal(SIGKILL) }
            let socket = try await WebSocketClient.connect(
                port: doomed.port, path: "/\(channel)/\(Self.token([("sub", .string(eve))]))")
            #expect(try await signals.next() == ("join", eve))
            doomed.signal(SIGKILL)
            _ = try await doomed.waitForExit()
            _ = socket
            // The survivor's heartbeat finds the dead server's silent past `staleAfter` (20 s).
            #expect(try await signals.next(timeout: patience(40)) == ("leave", eve))
            let left = try await signals.db.query("SELECT count(*) FROM pgws.presence WHERE channel = $1", [channel])
            #expect(left.first?.first == "0")
            _ = survivor
        }
    }

    @Test func presenceRequestsDuringAnOutageAreAnsweredUnavailable() async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        try await TestServer.with(databaseURI: cluster.uri, Self.presence) { server in
            let socket = try await WebSocketClient.connectV1(
                port: server.port, path: "/", token: Self.token([("sub", .string("z"))]))
            try await cluster.stopServer()
            try await server.log.waitForRecord(with: [.database: "lost"])
            try await socket.send(json: #"{"type":"presence","channel":"room","ref":"q"}"#)
            let error = try await socket.next(type: "error")
            #expect(error["code"] == .string("unavailable") && error["ref"] == .string("q"), "\(error)")
            let adminPort = try #require(try await server.bridge.metricsPort())
            #expect(try await HTTPGet.fetch(port: adminPort, path: "/channels/room/presence").status == 503)
            try await cluster.startServerAgain()
            await server.bridge.waitUntilDatabaseUp()
            try await socket.send(json: #"{"type":"presence","channel":"room","ref":"r"}"#)
            #expect(try await socket.next(type: "presence", timeout: patience(30))["ref"] == .string("r"))
        }
    }

    @Test func presenceRequestAnswersUnavailableWhenPresenceIsOff() async throws {
        try await TestServer.with { server in
            let socket = try await WebSocketClient.connectV1(
                port: server.port, path: "/", token: Self.token([("sub", .string("x"))]))
            try await socket.send(json: #"{"type":"presence","channel":"room","ref":7}"#)
            let error = try await socket.next(type: "error")
            #expect(error["code"] == .string("unavailable") && error["ref"] == .number("7"))
        }
    }

    @Test func presenceOfAChannelTheTokenCannotReadIsForbidden() async throws {
        try await TestServer.with(Self.presence) { server in
            let token = TestTokens.mint(mode: "r", channels: ["allowed"], extra: [("sub", .string("y"))])
            let socket = try await WebSocketClient.connectV1(port: server.port, path: "/", token: token)
            try await socket.send(json: #"{"type":"presence","channel":"elsewhere","ref":1}"#)
            #expect(try await socket.next(type: "error")["code"] == .string("forbidden"))
        }
    }
}
