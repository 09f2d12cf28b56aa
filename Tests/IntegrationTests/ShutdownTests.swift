import BridgeTestSupport
import Foundation
import PostgresWebSockets
import Testing

/// SIGTERM and SIGINT on the real executable.
@Suite struct ShutdownTests {
    @Test(arguments: [SIGTERM, SIGINT])
    func signalClosesSocketsFlushesQueueAndExitsZero(signal: Int32) async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        let channel = uniqueChannel()
        let db = try TestDatabase(uri: cluster.uri)
        try await db.listen(channel)
        let server = try await ServerProcess(environment: [
            "PGWS_DB_URI": cluster.uri, "PGWS_JWT_SECRET": TestTokens.secret,
        ])
        let reader = try await WebSocketClient.connect(
            port: server.port, path: "/\(channel)/\(TestTokens.mint(mode: "r"))")
        let writer = try await WebSocketClient.connect(
            port: server.port, path: "/\(channel)/\(TestTokens.mint(mode: "w"))")
        try await writer.send(text: "first")
        _ = try await db.nextNotification()

        // Freeze the backends that commit client messages: whatever the writer sends now is
        // certainly still queued in the server when the signal arrives.
        let backends = try await db.backendPIDs(application: "postgres-websockets notifier")
        #expect(!backends.isEmpty)
        backends.forEach { kill($0, SIGSTOP) }
        defer { backends.forEach { kill($0, SIGCONT) } }  // also when an expectation throws
        let count = 300
        try await writer.send(texts: (0..<count).map { "last-\($0)" })
        try await writer.ping([1])
        #expect(try await writer.next() == .pong([1]))  // the server has read every message
        server.signal(signal)

        let close = try await reader.nextClose(timeout: 15)
        #expect(close.code == 1001)
        #expect(close.reason == "server shutting down")
        let started = Date()
        backends.forEach { kill($0, SIGCONT) }
        #expect(try await server.waitForExit(timeout: 15) == 0)
        #expect(Date().timeIntervalSince(started) < 10)
        let received = try await db.notifications(count: count, timeout: 15)
        let payloads = try received.map { try JSONParser.parse($0.payload)["payload"]?.stringValue }
        #expect(payloads == (0..<count).map { "last-\($0)" })
        // Nothing listens on the port any more.
        await #expect(throws: (any Error).self) {
            _ = try await WebSocketClient.open(port: server.port, path: "/\(channel)/\(TestTokens.mint(mode: "r"))")
        }
    }
}
