import BridgeTestSupport
import Foundation
import PostgresWebSockets
import Testing

/// Many short-lived sockets leave neither memory nor LISTENs behind.
@Suite struct LeakTests {
    @Test func twentyThousandCyclesLeaveNoTrace() async throws {
        let environment = [
            "PGWS_DB_URI": await TemporaryPostgres.sharedURI(), "PGWS_JWT_SECRET": TestTokens.secret,
            "PGWS_LOG_LEVEL": "notice",
            // The delivery log is a bounded cache of recent frames, not a leak: keep it short,
            // so that what this test measures is what stays behind.
            "PGWS_MAX_LAG_SECONDS": "1",
        ]
        try await ServerProcess.with(environment: environment) { server in
            let prefix = uniqueChannel("leak")
            let concurrency = 8

            /// One socket's life: connect, send, read the echo back through PostgreSQL, close.
            func cycles(_ range: Range<Int>) async throws {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for worker in 0..<concurrency {
                        group.addTask {
                            for i in stride(from: range.lowerBound + worker, to: range.upperBound, by: concurrency) {
                                // Half the cycles share 50 channels, half use a channel of their own:
                                // both LISTEN reuse and LISTEN/UNLISTEN churn.
                                let channel = i % 2 == 0 ? "\(prefix)-\(i % 100)" : "\(prefix)-u\(i)"
                                let client = try await WebSocketClient.connect(
                                    port: server.port, path: "/\(channel)/\(TestTokens.mint(mode: "rw"))")
                                try await client.send(text: "cycle \(i)")
                                while true {
                                    let envelope = try JSONParser.parse(try await client.nextText())
                                    if envelope["payload"] == .string("cycle \(i)") { break }
                                }
                                try await client.close()
                                _ = try await client.nextClose()
                                await client.disconnect()
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }

            try await cycles(0..<1_000)
            let afterFirstThousand = try #require(server.memoryKB("VmRSS"))
            // Under ThreadSanitizer the memory is not checked (see below): fewer cycles suffice.
            try await cycles(1_000..<(runsUnderSanitizer ? 4_000 : 20_000))
            let health = try await waitForIdle(port: server.port)
            let final = try #require(server.memoryKB("VmRSS"))
            if !runsUnderSanitizer {
                #expect(
                    Double(final) <= Double(afterFirstThousand) * 1.10,
                    "RSS after 1,000: \(afterFirstThousand) kB, after 20,000: \(final) kB")
            }
            #expect(health["connections"] == .number("0"))
            #expect(health["listening"] == .number("1"), "the listen channel only")
        }

    }

    /// The server's own /health once every socket is gone and every channel UNLISTENed
    /// (the server's answer reflects what PostgreSQL acknowledged).
    func waitForIdle(port: Int) async throws -> JSONValue {
        var last: JSONValue = .null
        try await waitUntil(timeout: 20, "no sockets and no LISTEN", every: 0.05) {
            last = try JSONParser.parse(try await HTTPGet.fetch(port: port, path: "/health").body)
            return last["connections"] == .number("0") && last["listening"] == .number("1")
        }
        return last
    }
}
