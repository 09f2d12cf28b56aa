import BridgeTestSupport
import Foundation
import Logging
import PostgresWebSockets
import Testing

/// URL forms, claim rules and the refusal of every kind of bad handshake, against the
/// real server and PostgreSQL.
@Suite struct HandshakeTests {
    /// Expects the handshake for `path` to be refused with `status` and a one-line body
    /// that contains `reason`.
    func expectRefusal(
        _ server: TestServer, _ path: String, status: Int, reason: String, headers: [(String, String)] = [],
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let outcome = try await server.open(path, headers: headers)
        guard case .refused(let refusal) = outcome else {
            Issue.record("expected HTTP \(status), the socket was accepted", sourceLocation: sourceLocation)
            return
        }
        #expect(refusal.status == status, "body: \(refusal.body)", sourceLocation: sourceLocation)
        #expect(refusal.body.contains(reason), "body: \(refusal.body)", sourceLocation: sourceLocation)
        #expect(
            refusal.body.filter { $0 == "\n" }.count == 1, "one line: \(refusal.body)", sourceLocation: sourceLocation)
        #expect(refusal.headers["content-type"]?.hasPrefix("text/plain") == true, sourceLocation: sourceLocation)
    }

    /// Proves `client` reads `channel`: a NOTIFY on it arrives.
    func expectReads(_ client: WebSocketClient, _ channel: String, db: TestDatabase) async throws {
        let payload = "probe-\(UUID().uuidString)"
        try await db.notify(channel, payload)
        #expect(try await client.nextText() == payload)
    }

    @Test func tokenOnlyURLGrantsEveryClaimedChannel() async throws {
        try await TestServer.with { server in
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            let (a, b, c) = (uniqueChannel(), uniqueChannel(), uniqueChannel())
            let token = TestTokens.mint(mode: "r", channel: a, channels: [b, c, a])
            let client = try await server.connect("/\(token)")
            try await expectReads(client, a, db: db)
            try await expectReads(client, b, db: db)
            try await expectReads(client, c, db: db)
            let other = uniqueChannel()
            try await db.notify(other, "not for this socket")
            try await expectReads(client, a, db: db)  // the unrelated NOTIFY never arrived before this one
        }
    }

    @Test func tokenOnlyURLWithoutChannelsIsRefused() async throws {
        try await TestServer.with { server in
            try await expectRefusal(server, "/\(TestTokens.mint(mode: "rw"))", status: 403, reason: "claims no channel")
        }
    }

    @Test func requestedChannelIsGrantedWhenTokenClaimsNone() async throws {
        try await TestServer.with { server in
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            let channel = uniqueChannel()
            let client = try await server.connect("/\(channel)/\(TestTokens.mint(mode: "r"))")
            try await expectReads(client, channel, db: db)
        }
    }

    @Test func requestedChannelMustBeAmongClaimedOnes() async throws {
        try await TestServer.with { server in
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            let (allowed, other) = (uniqueChannel(), uniqueChannel())
            let token = TestTokens.mint(mode: "r", channels: [uniqueChannel(), allowed])
            let client = try await server.connect("/\(allowed)/\(token)")
            try await expectReads(client, allowed, db: db)
            try await expectRefusal(server, "/\(other)/\(token)", status: 403, reason: "channel not allowed")
        }
    }

    @Test func channelSegmentIsPercentDecoded() async throws {
        try await TestServer.with { server in
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            let channel = "room \(UUID().uuidString.prefix(6)) ✓/é"
            let client = try await server.connect("/\(TestServer.pathSegment(channel))/\(TestTokens.mint(mode: "r"))")
            try await expectReads(client, channel, db: db)
            try await expectRefusal(
                server, "/bad%zzname/\(TestTokens.mint(mode: "r"))", status: 403, reason: "percent-encoding")
        }
    }

    @Test func channelNamesAreLimitedTo63Bytes() async throws {
        try await TestServer.with { server in
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            let prefix = uniqueChannel()
            let longest = prefix + String(repeating: "x", count: 63 - prefix.utf8.count)
            let client = try await server.connect("/\(longest)/\(TestTokens.mint(mode: "r"))")
            try await expectReads(client, longest, db: db)
            try await expectRefusal(
                server, "/\(longest)y/\(TestTokens.mint(mode: "r"))", status: 403, reason: "longer than 63 bytes")
            // 62 ASCII bytes plus one two-byte character: 64 bytes, though 63 characters.
            let multibyte = String(repeating: "x", count: 62) + "é"
            try await expectRefusal(
                server, "/\(TestServer.pathSegment(multibyte))/\(TestTokens.mint(mode: "r"))", status: 403,
                reason: "longer than 63 bytes")
            let claimed = TestTokens.mint(mode: "r", channel: longest + "y")
            try await expectRefusal(server, "/\(claimed)", status: 403, reason: "longer than 63 bytes")
        }
    }

    @Test func modeClaimIsRequiredAndChecked() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            try await expectRefusal(
                server, "/\(channel)/\(TestTokens.mint(mode: nil))", status: 403, reason: "no mode claim")
            for mode in ["x", "wr", "R", ""] {
                try await expectRefusal(
                    server, "/\(channel)/\(TestTokens.mint(mode: mode))", status: 403, reason: "mode claim")
            }
            let numeric = TestTokens.mint(claimsJSON: #"{"mode":1}"#)
            try await expectRefusal(server, "/\(channel)/\(numeric)", status: 403, reason: "mode claim")
        }
    }

    @Test func tokenProblemsAre401() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let now = Date().timeIntervalSince1970
            let good = TestTokens.mint(mode: "rw")
            try await expectRefusal(server, "/\(channel)/not-a-jwt", status: 401, reason: "malformed JWT")
            try await expectRefusal(server, "/\(channel)/", status: 401, reason: "missing JWT")
            try await expectRefusal(
                server, "/\(channel)/\(TestTokens.mint(mode: "rw", secret: "another secret"))", status: 401,
                reason: "invalid JWT signature")
            try await expectRefusal(
                server, "/\(channel)/\(good.dropLast(2))", status: 401, reason: "invalid JWT signature")
            try await expectRefusal(
                server, "/\(channel)/\(TestTokens.mint(mode: "rw", exp: now - 5))", status: 401, reason: "JWT expired")
            try await expectRefusal(
                server, "/\(channel)/\(TestTokens.mint(mode: "rw", nbf: now + 3600))", status: 401,
                reason: "JWT not yet valid")
            let unsigned =
                TestTokens.segment(#"{"alg":"none","typ":"JWT"}"#) + "." + TestTokens.segment(#"{"mode":"rw"}"#) + "."
            try await expectRefusal(
                server, "/\(channel)/\(unsigned)", status: 401, reason: "unsupported JWT algorithm none")
            let rs256 = TestTokens.mint(claimsJSON: #"{"mode":"rw"}"#, headerJSON: #"{"alg":"RS256"}"#)
            try await expectRefusal(
                server, "/\(channel)/\(rs256)", status: 401, reason: "unsupported JWT algorithm RS256")
            let stringExp = TestTokens.mint(claimsJSON: #"{"mode":"rw","exp":"4102444800"}"#)
            try await expectRefusal(
                server, "/\(channel)/\(stringExp)", status: 401, reason: "exp claim is not a number")
        }
    }

    @Test func allHMACAlgorithmsAreAccepted() async throws {
        try await TestServer.with { server in
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            for algorithm in JWTAlgorithm.allCases {
                let channel = uniqueChannel()
                let token = TestTokens.mint(
                    mode: "r", channel: channel, exp: Date().timeIntervalSince1970 + 600, algorithm: algorithm)
                let client = try await server.connect("/\(token)")
                try await expectReads(client, channel, db: db)
            }
        }
    }

    /// The two example tokens of the postgres-websockets README work unchanged.
    @Test func readmeTokensOfPostgresWebsocketsWork() async throws {
        try await TestServer.with { server in
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            let modeOnly =
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoicncifQ.QKGnMJe41OFZcjz_qQSplmWAmVd_hmVjijKUNoJYpis"
            let withChat =
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoicnciLCJjaGFubmVsIjoiY2hhdCJ9.fEm6P7GHeJWZG8OtZhv3H0JdqPljE5dainvsoupM9pA"
            let channel = uniqueChannel()
            let first = try await server.connect("/\(channel)/\(modeOnly)")
            try await expectReads(first, channel, db: db)
            // The second token claims "chat": shared by every test run, so only its grant is checked here.
            let second = try await server.connect("/\(withChat)")
            try await second.send(text: "readme")
            let envelope = try JSONParser.parse(try await second.nextText())
            #expect(envelope["channel"] == .string("chat"))
            try await expectRefusal(server, "/\(channel)/\(withChat)", status: 403, reason: "channel not allowed")
        }
    }

    @Test func socketIsClosedWith3001WhenTokenExpires() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let token = TestTokens.mint(mode: "rw", exp: Date().timeIntervalSince1970 + 3)
            let client = try await server.connect("/\(channel)/\(token)")
            let close = try await client.nextClose(timeout: 15)
            #expect(close.code == 3001)
            #expect(close.reason == "JWT expired")
            #expect(try await client.next() == .disconnected)
        }
    }

    @Test func malformedHandshakesGetClearStatuses() async throws {
        try await TestServer.with { server in
            let path = "/\(uniqueChannel())/\(TestTokens.mint(mode: "rw"))"
            func raw(_ request: String) async throws -> HTTPRefusal {
                let outcome = try await WebSocketClient.open(port: server.port, path: path, rawRequest: request)
                guard case .refused(let refusal) = outcome else { throw WaitTimeout(what: "a refusal") }
                return refusal
            }
            let missingKey = try await raw(
                "GET \(path) HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            #expect(missingKey.status == 400)
            #expect(missingKey.body.contains("Sec-WebSocket-Key"))
            let badKey = try await raw(
                "GET \(path) HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            #expect(badKey.status == 400)
            let oldVersion = try await raw(
                "GET \(path) HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
            )
            #expect(oldVersion.status == 426)
            #expect(oldVersion.headers["sec-websocket-version"] == "13")
            let post = try await raw(
                "POST \(path) HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"
            )
            #expect(post.status == 405)
            let garbage = try await raw("\u{1}\u{2}GARBAGE\r\n\r\n")
            #expect(garbage.status == 400)
            let tooManySegments = try await server.open("/a/b/\(TestTokens.mint(mode: "rw"))")
            guard case .refused(let refusal) = tooManySegments else { Issue.record("accepted"); return }
            #expect(refusal.status == 404)
        }
    }

    // MARK: - The token outside the URL

    /// A `bearer.<jwt>` subprotocol entry with `postgres-websockets` beside it: the 101 selects
    /// `postgres-websockets` and never echoes the token; `/` gets every claimed channel,
    /// `/<channel>` that one.
    @Test func bearerSubprotocolEntryCarriesTheToken() async throws {
        try await TestServer.with({ $0.logLevel = .trace }) { server in
            let (a, b) = (uniqueChannel(), uniqueChannel())
            let token = TestTokens.mint(mode: "r", channels: [a, b])
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            let everything = try await server.connect(
                "/", headers: [("Sec-WebSocket-Protocol", "postgres-websockets, bearer.\(token)")])
            #expect(everything.responseHeaders["sec-websocket-protocol"] == "postgres-websockets")
            try await expectReads(everything, a, db: db)
            try await expectReads(everything, b, db: db)
            let one = try await server.connect(
                "/\(b)",
                headers: [
                    ("Sec-WebSocket-Protocol", "bearer.\(token)"), ("Sec-WebSocket-Protocol", "postgres-websockets"),
                ])
            try await expectReads(one, b, db: db)
            // Only the bearer entry: nothing to select (browsers then fail: offer postgres-websockets too).
            let bare = try await server.connect("/\(a)", headers: [("Sec-WebSocket-Protocol", "bearer.\(token)")])
            #expect(bare.responseHeaders["sec-websocket-protocol"] == nil)
            try await expectReads(bare, a, db: db)
            #expect(!everything.responseHeaders.values.contains { $0.contains(token) })
            let logged = server.log.records.map(\.description)
            #expect(!logged.isEmpty)
            #expect(!logged.contains { $0.contains(token) || $0.contains(token.split(separator: ".")[2]) })
        }
    }

    @Test func authorizationBearerHeaderCarriesTheToken() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            let client = try await server.connect(
                "/\(TestServer.pathSegment(channel))",
                headers: [("Authorization", "Bearer \(TestTokens.mint(mode: "r"))")])
            try await expectReads(client, channel, db: db)
            try await expectRefusal(
                server, "/", status: 403, reason: "JWT claims no channel",
                headers: [("Authorization", "bearer \(TestTokens.mint(mode: "r"))")])
            try await expectRefusal(
                server, "/\(channel)", status: 401, reason: "malformed JWT", headers: [("Authorization", "Bearer x.y")])
        }
    }

    @Test func moreThanOneTokenIs400() async throws {
        try await TestServer.with { server in
            let channel = uniqueChannel()
            let token = TestTokens.mint(mode: "rw")
            let entry = ("Sec-WebSocket-Protocol", "bearer.\(token)")
            let header = ("Authorization", "Bearer \(token)")
            for (path, headers) in [
                ("/\(channel)/\(token)", [entry]), ("/\(channel)/\(token)", [header]),
                ("/\(channel)", [entry, header]),
                ("/\(channel)", [("Sec-WebSocket-Protocol", "bearer.\(token), bearer.\(token)")]),
            ] {
                try await expectRefusal(server, path, status: 400, reason: "more than one token", headers: headers)
            }
        }
    }

    /// A JWK Set as `jwt-secret`: tokens of every asymmetric kind open sockets, each checked
    /// against the key its `kid` names; a `kid` the set lacks is refused.
    @Test func jwkSetSecretVerifiesAsymmetricTokens() async throws {
        let keys = try TestSigningKey.Kind.allCases.map { try TestSigningKey($0, kid: "k-\($0.rawValue)") }
        let jwks = #"{"keys":["# + keys.map(\.publicJWK).joined(separator: ",") + "]}"
        try await TestServer.with({ $0.jwtSecret = Array(jwks.utf8) }) { server in
            let channel = uniqueChannel()
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            for key in keys {
                let client = try await server.connect("/\(channel)/\(key.mint(claimsJSON: #"{"mode":"r"}"#))")
                try await expectReads(client, channel, db: db)
            }
            let stranger = try TestSigningKey(.es256, kid: "not-in-the-set")
            try await expectRefusal(
                server, "/\(channel)/\(stranger.mint(claimsJSON: #"{"mode":"r"}"#))", status: 401, reason: "unknown key"
            )
            try await expectRefusal(
                server, "/\(channel)/\(TestTokens.mint(mode: "r"))", status: 401, reason: "HS256")
        }
    }
}
