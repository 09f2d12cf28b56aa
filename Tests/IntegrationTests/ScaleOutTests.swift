import BridgeTestSupport
import Foundation
import PostgresWebSockets
import Testing

/// Several server processes on one database: PostgreSQL is the hub between them.
@Suite struct ScaleOutTests {
    @Test func readerOnOneInstanceGetsWriterOfAnotherAndAuditOnce() async throws {
        let audit = uniqueChannel("audit")
        let environment = [
            "PGWS_DB_URI": await TemporaryPostgres.sharedURI(), "PGWS_JWT_SECRET": TestTokens.secret,
            "PGWS_AUDIT_CHANNEL": audit,
        ]
        try await ServerProcess.with(environment: environment) { a in
            try await ServerProcess.with(environment: environment) { b in
                let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
                try await db.listen(audit)
                let channel = uniqueChannel()
                let reader = try await WebSocketClient.connect(
                    port: a.port, path: "/\(channel)/\(TestTokens.mint(mode: "r"))")
                let writer = try await WebSocketClient.connect(
                    port: b.port, path: "/\(channel)/\(TestTokens.mint(mode: "w"))")
                for i in 0..<10 { try await writer.send(text: "across-\(i)") }
                for i in 0..<10 {
                    let envelope = try JSONParser.parse(try await reader.nextText())
                    #expect(envelope["payload"] == .string("across-\(i)"))
                }
                let audited = try await db.notifications(count: 10)
                #expect(
                    audited.map { try? JSONParser.parse($0.payload)["payload"]?.stringValue }
                        == (0..<10).map { "across-\($0)" })
                // Exactly once: no second copy from the other instance.
                try await writer.ping([2])
                #expect(try await writer.next() == .pong([2]))
                try await reader.expectSilence(for: 0.3)
                #expect(try await db.drainNotifications().isEmpty)
            }
        }

    }
}
