import BridgeTestSupport
import Foundation
import PostgresWebSockets
import Testing

/// The executable itself: how it treats bad configuration at start.
@Suite struct StartupTests {
    func runToExit(environment: [String: String], arguments: [String] = []) async throws -> (status: Int32, log: String)
    {
        let process = try await ServerProcess(environment: environment, arguments: arguments, waitForListening: false)
        let status = try await process.waitForExit(timeout: 30)
        return (status, process.log)
    }

    @Test func missingDatabaseURIExitsWithOneLine() async throws {
        let result = try await runToExit(environment: ["PGWS_JWT_SECRET": "s"])
        #expect(result.status == 1)
        #expect(result.log.split(separator: "\n").count == 1, "\(result.log)")
        #expect(result.log.contains("db-uri is required"))
        #expect(result.log.contains("PGWS_DB_URI"))
    }

    @Test func unknownKeyIsNamedWithItsLine() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("pgws-\(UUID().uuidString).conf")
        try "# comment\ndb-uri = \"postgres://x\"\njwt-secret = \"s\"\nserver-prot = 3000\n".write(
            to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try await runToExit(environment: [:], arguments: [file.path])
        #expect(result.status == 1)
        #expect(result.log.contains("\(file.path):4: unknown key 'server-prot'"), "\(result.log)")
        #expect(result.log.split(separator: "\n").count == 1)
    }

    @Test func badValueIsNamedWithoutEchoingSecrets() async throws {
        let result = try await runToExit(environment: [
            "PGWS_DB_URI": "postgres://x", "PGWS_JWT_SECRET": "%%%not-base64%%%", "PGWS_JWT_SECRET_BASE64": "true",
        ])
        #expect(result.status == 1)
        #expect(result.log.contains("PGWS_JWT_SECRET"))
        #expect(!result.log.contains("not-base64"))
        let port = try await runToExit(environment: [
            "PGWS_DB_URI": "postgres://x", "PGWS_JWT_SECRET": "s", "PGWS_PORT": "99999",
        ])
        #expect(port.status == 1)
        #expect(port.log.contains("PGWS_PORT"))
        #expect(port.log.split(separator: "\n").count == 1)
    }

    /// PGWS_RETRIES, as upstream: a database that cannot be reached in that many attempts at
    /// start ends the server with exit status 1 and a line that says so.
    @Test func retriesRunOutExitWithStatus1() async throws {
        let result = try await runToExit(environment: [
            "PGWS_DB_URI":
                "postgresql://postgres@127.0.0.1:\(try TemporaryPostgres.freePort())/postgres?connect_timeout=1",
            "PGWS_JWT_SECRET": "s", "PGWS_RETRIES": "2", "PGWS_PORT": "0",
        ])
        #expect(result.status == 1)
        #expect(result.log.contains("cannot connect to PostgreSQL after 2 attempts (retries)"), "\(result.log)")
    }

    @Test func sampleConfigurationIsValid() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let config = try Configuration.load(path: root.appendingPathComponent("sample.conf").path, environment: [:])
        #expect(config.jwtSecret == Array(TestTokens.secret.utf8))
        #expect(config.server.port == 3000)
        #expect(config.server.rootPath == "client-example")
        #expect(config.channels.auditChannel == "audit")
    }

    /// log-format = json: every line the executable writes, from start to shutdown, is one
    /// object with time, level and message, and its metadata as fields.
    @Test func jsonLogFormatWritesOneObjectPerLine() async throws {
        let token = TestTokens.mint(mode: "r")
        let server = try await ServerProcess(environment: [
            "PGWS_DB_URI": await TemporaryPostgres.sharedURI(), "PGWS_JWT_SECRET": TestTokens.secret,
            "PGWS_LOG_FORMAT": "json", "PGWS_LOG_LEVEL": "debug",
        ])
        let socket = try await WebSocketClient.connect(port: server.port, path: "/\(uniqueChannel())/\(token)")
        try await socket.close()
        await server.stop()
        #expect(server.process.terminationStatus == 0)
        let lines = server.log.split(separator: "\n")
        #expect(lines.count >= 3, "\(server.log)")
        for line in lines {
            let object = try JSONParser.parse(String(line))
            #expect(object["time"]?.stringValue?.hasSuffix("Z") == true, "\(line)")
            #expect(object["level"]?.stringValue != nil, "\(line)")
            #expect(object["message"]?.stringValue != nil, "\(line)")
        }
        let listening = try JSONParser.parse(
            try #require(lines.first { $0.contains("postgres-websockets listening") }).description)
        #expect(listening["port"] == .string("\(server.port)"))
        #expect(
            lines.contains { (try? JSONParser.parse(String($0)))?["socket_id"] != nil }, "socket lines carry socket_id")
        #expect(!server.log.contains(token))
    }
}
