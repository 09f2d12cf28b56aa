import BridgeTestSupport
import Foundation
import PostgresWebSockets
import Testing

@Suite struct SmokeTests {
    @Test func notifyReachesSocket() async throws {
        try await TestServer.with { server in
            let channel = "smoke-\(UUID().uuidString.prefix(8))"
            let client = try await server.connect("/\(channel)/\(TestTokens.mint(mode: "rw"))")
            let db = try TestDatabase(uri: TemporaryPostgres.sharedURI)
            try await db.notify(channel, "hello")
            #expect(try await client.nextText() == "hello")
            try await client.send(text: "from client")
            let envelope = try await client.nextText()
            #expect(envelope.contains("\"payload\":\"from client\""))
            await client.disconnect()
        }
    }
}
