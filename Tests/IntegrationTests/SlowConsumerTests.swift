import BridgeTestSupport
import Foundation
import PostgresWebSockets
import Testing

/// One socket that stops reading must not hold up the others, nor grow the server's memory.
@Suite struct SlowConsumerTests {
    @Test func stalledSocketIsClosedWhileReadersGetEverything() async throws {
        let count = 20_000
        let chunk = 500
        let environment = [
            "PGWS_DB_URI": await TemporaryPostgres.sharedURI(), "PGWS_JWT_SECRET": TestTokens.secret,
            // Long enough that the stalled client can still read its close frame once it resumes.
            "PGWS_PONG_TIMEOUT": "60",
        ]
        try await ServerProcess.with(environment: environment) { server in
            let channel = uniqueChannel()
            let path = "/\(channel)/\(TestTokens.mint(mode: "r"))"
            var readers: [WebSocketClient] = []
            for _ in 0..<3 { readers.append(try await WebSocketClient.connect(port: server.port, path: path)) }
            let stalled = try await WebSocketClient.connect(port: server.port, path: path)
            try await stalled.pauseReading()
            let baselineKB = try #require(server.memoryKB("VmRSS"))

            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            let progress = ReaderProgress(readers: readers.count)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, reader) in readers.enumerated() {
                    group.addTask {
                        for i in 1...count {
                            let text = try await reader.nextText(timeout: 30)
                            guard text.count == 1024, Int(text.drop(while: { $0 == "0" })) == i else {
                                throw WaitTimeout(what: "message \(i) in order, got \(text.prefix(40))...")
                            }
                            if i % chunk == 0 { await progress.reached(i, reader: index) }
                        }
                    }
                }
                // 1 KB NOTIFYs in statements of `chunk`, each sent once the readers are at most one
                // chunk behind: readers that keep up, and a stalled socket that falls far behind.
                group.addTask {
                    for start in stride(from: 1, through: count, by: chunk) {
                        await progress.waitForAll(atLeast: start - 1 - chunk)
                        try await db.query(
                            "SELECT count(pg_notify($1, lpad(i::text, 1024, '0'))) FROM generate_series($2::int, $3::int) AS i",
                            [channel, String(start), String(start + chunk - 1)])
                    }
                }
                try await group.waitForAll()
            }

            // Memory: the stalled socket may hold at most max-socket-buffer (1 MiB) of frames, not
            // the 20 MB sent past it. Measured here: +2.4 MB with the bound, +18 MB without it.
            let peakKB = try #require(server.memoryKB("VmHWM"))
            if !runsUnderSanitizer {
                #expect(peakKB - baselineKB < 8 * 1024, "baseline \(baselineKB) kB, peak \(peakKB) kB")
            }

            try await stalled.resumeReading()
            var received = 0
            while true {
                switch try await stalled.next(timeout: 30) {
                case .text(let text):
                    received += 1
                    #expect(Int(text.drop(while: { $0 == "0" })) == received)
                case .close(let code, let reason):
                    #expect(code == 1008)
                    #expect(reason == "client too slow")
                    #expect(received > 0 && received < count, "received \(received)")
                    #expect(try await stalled.next(timeout: 30) == .disconnected)
                    return
                case let other:
                    Issue.record("unexpected \(other)")
                    return
                }
            }
        }

    }
}

/// How far each reader got, for a sender that must not run ahead of them.
private actor ReaderProgress {
    private var positions: [Int]
    private var waiters: [(minimum: Int, continuation: CheckedContinuation<Void, Never>)] = []

    init(readers: Int) {
        positions = Array(repeating: 0, count: readers)
    }

    func reached(_ position: Int, reader: Int) {
        positions[reader] = position
        let slowest = positions.min() ?? 0
        waiters.removeAll { waiter in
            guard slowest >= waiter.minimum else { return false }
            waiter.continuation.resume()
            return true
        }
    }

    func waitForAll(atLeast minimum: Int) async {
        if (positions.min() ?? 0) >= minimum { return }
        await withCheckedContinuation { waiters.append((minimum, $0)) }
    }
}
