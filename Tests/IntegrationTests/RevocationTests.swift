import BridgeTestSupport
import Foundation
import PostgresWebSockets
import Testing

/// `pgws.disconnect` and `pgws.revoke`, called in SQL, reaching the sockets of every server
/// on the database.
@Suite struct RevocationTests {
    static func durable(_ config: inout Configuration) {
        config.durable.mode = .on
    }

    static func token(_ claims: [(String, JSONValue)], mode: String = "r") -> String {
        TestTokens.mint(mode: mode, extra: claims)
    }

    /// Proves `socket` is still open and reading `channel`: a probe NOTIFYed now arrives (after
    /// earlier probes, sent to other sockets of the channel).
    static func expectOpen(_ socket: WebSocketClient, reading channel: String, db: TestDatabase) async throws {
        let probe = "still-\(UUID().uuidString)"
        try await db.notify(channel, probe)
        while try await socket.nextText() != probe {}
    }

    @Test func disconnectClosesMatchingSocketsOnEveryServer() async throws {
        try await TestServer.with(Self.durable) { first in
            try await TestServer.with(Self.durable) { second in
                let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
                let channel = uniqueChannel()
                let alice = uniqueChannel("alice")
                let team = uniqueChannel("team")
                let aliceToken = Self.token([("sub", .string(alice)), ("team", .string(team))])
                let bobToken = Self.token([("sub", .string(uniqueChannel("bob"))), ("team", .string(team))])
                let carolToken = Self.token([("sub", .string(uniqueChannel("carol"))), ("team", .string("other"))])
                let aliceOnFirst = try await first.connect("/\(channel)/\(aliceToken)")
                let aliceOnSecond = try await second.connect("/\(channel)/\(aliceToken)")
                let aliceStream = try await EventStreamClient.open(
                    port: second.port, path: "/\(channel)/\(aliceToken)")
                #expect(aliceStream.status == 200)
                let bob = try await second.connect("/\(channel)/\(bobToken)")
                let carol = try await first.connect("/\(channel)/\(carolToken)")

                _ = try await db.query(
                    "SELECT pgws.disconnect($1::jsonb, 'account closed')", [#"{"sub":"\#(alice)"}"#])
                for socket in [aliceOnFirst, aliceOnSecond] {
                    let close = try await socket.nextClose()
                    #expect(close.code == 3003)
                    #expect(close.reason == "account closed")
                }
                #expect(try await aliceStream.nextEvent() == .event(id: nil, type: "revoked", data: "account closed"))
                #expect(try await aliceStream.next() == .ended)
                try await Self.expectOpen(bob, reading: channel, db: db)
                try await Self.expectOpen(carol, reading: channel, db: db)

                // A custom claim: everyone of the team.
                _ = try await db.query("SELECT pgws.disconnect($1::jsonb, 'team removed')", [#"{"team":"\#(team)"}"#])
                let close = try await bob.nextClose()
                #expect(close.code == 3003 && close.reason == "team removed")
                try await Self.expectOpen(carol, reading: channel, db: db)

                // A disconnect refuses nothing: alice comes back.
                let again = try await first.connect("/\(channel)/\(aliceToken)")
                try await Self.expectOpen(again, reading: channel, db: db)
            }
        }
    }

    @Test func revokeRefusesHandshakesUntilItEnds() async throws {
        try await TestServer.with(Self.durable) { server in
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            let channel = uniqueChannel()
            let dave = uniqueChannel("dave")
            let daveToken = Self.token([("sub", .string(dave))])
            let gus = uniqueChannel("gus")
            let gusToken = Self.token([("sub", .string(gus))])
            let erinToken = Self.token([("sub", .string(uniqueChannel("erin")))])
            let open = try await server.connect("/\(channel)/\(daveToken)")
            let erin = try await server.connect("/\(channel)/\(erinToken)")

            // gus for a few seconds, then dave for an hour: the listener takes the signals in
            // commit order, so once dave's socket is closed, gus's revocation is known too.
            let lasts = patience(3)
            _ = try await db.query(
                "SELECT pgws.revoke($1::jsonb, now() + make_interval(secs => $2::float8))",
                [#"{"sub":"\#(gus)"}"#, "\(lasts)"])
            let gusRevokedAt = Date()
            _ = try await db.query("SELECT pgws.revoke($1::jsonb, now() + interval '1 hour')", [#"{"sub":"\#(dave)"}"#])
            let close = try await open.nextClose()
            #expect(close.code == 3003 && close.reason == "token revoked")

            guard case .refused(let refusal) = try await server.open("/\(channel)/\(daveToken)") else {
                Issue.record("a revoked token was accepted")
                return
            }
            #expect(refusal.status == 401)
            #expect(refusal.body == "token revoked\n")
            #expect(server.log.records(with: [.httpStatus: "401"]).contains { $0[.refusal] == "token revoked" })
            try await Self.expectOpen(erin, reading: channel, db: db)
            // Nor can a pgws.v1 socket take the revoked claims on by a refresh.
            let v1 = try await WebSocketClient.connectV1(port: server.port, path: "/", token: erinToken)
            try await v1.send(json: #"{"type":"refresh","token":"\#(daveToken)","ref":"r"}"#)
            let error = try await v1.nextJSON()
            #expect(error["code"] == .string("unauthorized") && error["reason"] == .string("token revoked"), "\(error)")

            // A server that starts later reads the revocation from the table.
            try await TestServer.with(Self.durable) { later in
                guard case .refused(let refusal) = try await later.open("/\(channel)/\(daveToken)") else {
                    Issue.record("a server started after the revocation accepted the token")
                    return
                }
                #expect(refusal.status == 401)
            }

            // Once `until` passes, gus's token is good again, and not before.
            var refusedBefore = false
            try await waitUntil(timeout: lasts + 10, "gus's revocation to end", every: 0.2) {
                switch try await server.open("/\(channel)/\(gusToken)") {
                case .upgraded(let socket):
                    try await socket.close()
                    return true
                case .refused(let refusal):
                    #expect(refusal.status == 401)
                    refusedBefore = true
                    return false
                }
            }
            let ended = Date().timeIntervalSince(gusRevokedAt)
            #expect(ended >= lasts - 0.5, "accepted again after \(ended) s of \(lasts)")
            #expect(refusedBefore || ended > lasts, "refused while in force")
            // The next revocation deletes the ended one.
            _ = try await db.query(
                "SELECT pgws.revoke($1::jsonb, now() + interval '1 hour')", [#"{"sub":"\#(uniqueChannel("x"))"}"#])
            #expect(
                try await db.query(
                    "SELECT count(*) FROM pgws.revocations WHERE filter = $1::jsonb", [#"{"sub":"\#(gus)"}"#])
                    == [["0"]])
        }
    }

    @Test func revocationFiltersMustBeObjects() async throws {
        try await TestServer.with(Self.durable) { _ in
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            await #expect(throws: (any Error).self) { _ = try await db.query("SELECT pgws.disconnect('[1]', 'x')") }
            await #expect(throws: (any Error).self) {
                _ = try await db.query("SELECT pgws.revoke('\"sub\"', now() + interval '1 hour')")
            }
            await #expect(throws: (any Error).self) { _ = try await db.query("SELECT pgws.revoke('{}', NULL)") }
        }
    }

    /// Sockets are matched in Swift, the way PostgreSQL matches `claims @> filter`: for a few
    /// thousand random pairs, both say the same.
    @Test func containmentAgreesWithPostgreSQL() async throws {
        var random = SystemRandomNumberGenerator()
        func scalar() -> JSONValue {
            switch Int.random(in: 0..<6, using: &random) {
            case 0: .string(["a", "b"].randomElement(using: &random)!)
            case 1: .number(["1", "1.0", "2"].randomElement(using: &random)!)
            case 2: .bool(Bool.random(using: &random))
            case 3: .null
            default: .string("c")
            }
        }
        func value(depth: Int) -> JSONValue {
            guard depth > 0 else { return scalar() }
            switch Int.random(in: 0..<4, using: &random) {
            case 0: return .array((0..<Int.random(in: 0...3, using: &random)).map { _ in value(depth: depth - 1) })
            case 1:
                let keys = ["sub", "team", "roles"].shuffled(using: &random).prefix(
                    Int.random(in: 0...3, using: &random))
                return .object(keys.map { ($0, value(depth: depth - 1)) })
            default: return scalar()
            }
        }
        var claims: [JSONValue] = []
        var filters: [JSONValue] = []
        for _ in 0..<3000 {
            claims.append(value(depth: 3))
            filters.append(value(depth: 2))
        }
        let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
        let rows = try await db.query(
            "SELECT (c @> f)::text FROM unnest($1::jsonb[], $2::jsonb[]) WITH ORDINALITY AS t(c, f, n) ORDER BY n",
            [Self.arrayLiteral(claims), Self.arrayLiteral(filters)])
        #expect(rows.count == claims.count)
        var disagreements: [String] = []
        for (index, row) in rows.enumerated() where (row.first == "true") != claims[index].contains(filters[index]) {
            disagreements.append(
                "\(claims[index].serialized) @> \(filters[index].serialized): PostgreSQL \(row[0] ?? "NULL")")
        }
        #expect(disagreements.isEmpty, "\(disagreements.prefix(5))")
    }

    /// A PostgreSQL array literal of jsonb texts.
    static func arrayLiteral(_ values: [JSONValue]) -> String {
        "{"
            + values.map { value in
                "\""
                    + value.serialized.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(
                        of: "\"", with: "\\\"") + "\""
            }.joined(separator: ",") + "}"
    }
}
