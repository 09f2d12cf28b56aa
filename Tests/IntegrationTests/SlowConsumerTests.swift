import BridgeTestSupport
import Foundation
import NIOCore
import PostgresWebSockets
import Testing

/// A socket that stops reading must not hold up the others, nor grow the server's memory
/// past the delivery window; sockets slower than a burst but reading are not cut off.
@Suite struct SlowConsumerTests {
    @Test func stalledSocketIsClosedWhileReadersGetEverything() async throws {
        let count = 20_000
        let chunk = 500
        let environment = [
            "PGWS_DB_URI": await TemporaryPostgres.sharedURI(), "PGWS_JWT_SECRET": TestTokens.secret,
            // Long enough that the stalled client can still read its close frame once it resumes
            // (the run takes minutes under a sanitizer).
            "PGWS_PONG_TIMEOUT": runsUnderSanitizer ? "900" : "60",
            // A 4 MiB window per loop: the 20 MB the stalled socket misses cannot all be kept.
            "PGWS_MAX_LAG": "\(4 << 20)",
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

            // Memory: the stalled socket costs a position, and the log keeps at most its window
            // (4 MiB), not the 20 MB sent past it.
            let peakKB = try #require(server.memoryKB("VmHWM"))
            if !runsUnderSanitizer {
                #expect(peakKB - baselineKB < 8 * 1024, "baseline \(baselineKB) kB, peak \(peakKB) kB")
            }

            try await stalled.resumeReading()
            let (received, close) = try await readNumberedMessagesToClose(stalled)
            #expect(close.code == 1008)
            #expect(close.reason == "client too slow")
            #expect(received > 0 && received < count, "received \(received)")
            #expect(try await stalled.next(timeout: 30) == .disconnected)
        }
    }

    /// Readers on slow links (each well below the burst's pace, but reading) and one burst
    /// larger than their kernel buffers: they fall behind, replay from the log, and are not
    /// cut off, because the burst fits the default window.
    @Test func slowReadersCatchUpAfterABurstInsteadOfBeingCut() async throws {
        let count = 10_000
        // A sanitizer slows the readers of this process more than the 30 s window allows.
        // (and its pings, answered behind megabytes of frames, outlast the pong timeout).
        try await TestServer.with({
            if runsUnderSanitizer {
                $0.limits.maxLagDuration = .seconds(600)
                $0.limits.pingInterval = .fromSeconds(600)
            }
        }) { server in
            let channel = uniqueChannel()
            var readers: [WebSocketClient] = []
            for _ in 0..<4 {
                let reader = try await server.connect(channel: channel, mode: "r")
                try await reader.limitReading(bytesPerSecond: 2 << 20)
                readers.append(reader)
            }
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            // One statement: 10 MB within a fraction of a second, 5 s of reading for each.
            try await db.query(
                "SELECT count(pg_notify($1, lpad(i::text, 1024, '0'))) FROM generate_series(1, $2::int) AS i",
                [channel, String(count)])
            try await withThrowingTaskGroup(of: Void.self) { group in
                for reader in readers {
                    group.addTask {
                        for i in 1...count {
                            let text = try await reader.nextText(timeout: 30)
                            guard Int(text.drop(while: { $0 == "0" })) == i else {
                                throw WaitTimeout(what: "message \(i) in order, got \(text.prefix(40))...")
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(server.log.records(with: [.closeReason: "client too slow"]).isEmpty)
            let counters = await server.bridge.deliveryCounters()
            #expect(counters.fellBehind > 0, "the burst outran the readers: they went through the log")
            #expect(counters.cutOff == 0)
        }
    }

    /// A socket that stays behind longer than max-lag-seconds is cut off (1008), however
    /// little it lags in bytes (16 MB of a 64 MiB window); a reader beside it gets everything
    /// sent after the burst.
    @Test func socketBehindLongerThanMaxLagSecondsIsClosed() async throws {
        // 16 MB: more than the kernel buffers of a socket that does not read can absorb.
        let count = 16_000
        // Under a sanitizer the test process's client handshakes and reads several times slower
        // (a reader of the whole burst took 45 s here beside three suites and two busy loops, so
        // the reader below joins after it).
        let maxLag: Int64 = runsUnderSanitizer ? 20 : 1
        try await TestServer.with({
            $0.limits.maxLagDuration = .seconds(maxLag)
            // The cut socket has `pong-timeout` from its cut to read what it has and its close;
            // beside the whole suite the steps between (the reader's join, 200 messages) can take
            // longer than the default 10 s: one run saw the socket dropped before its close.
            $0.limits.pongTimeout = .seconds(runsUnderSanitizer ? 600 : 60)
        }) { server in
            let channel = uniqueChannel()
            let stalled = try await server.connect(channel: channel, mode: "r")
            try await stalled.pauseReading()
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            try await db.query(
                "SELECT count(pg_notify($1, lpad(i::text, 1024, '0'))) FROM generate_series(1, $2::int) AS i",
                [channel, String(count)])
            // The reader joins once the hub has taken the whole burst (one latency sample per
            // notification for the stalled socket's loop), so its own pace never meets the
            // window: what it must get is what follows, while the stalled socket is behind or cut.
            try await waitUntil(timeout: 30, "the burst through the hub") {
                await server.bridge.deliveryCounters().latency.count >= count
            }
            let reader = try await server.connect(channel: channel, mode: "r")
            let after = 200
            try await db.query(
                "SELECT count(pg_notify($1, i::text)) FROM generate_series(1, $2::int) AS i", [channel, String(after)])
            for i in 1...after {
                #expect(try await reader.nextText(timeout: 30) == String(i))
            }
            // The stalled socket is cut once its place leaves the window: max-lag after the burst.
            let cut = try await server.log.waitForRecord(
                with: [.closeReason: "client too slow"], timeout: Double(maxLag) + 10)
            #expect(cut[.closeCode] == "1008")
            #expect(server.log.records(with: [.closeReason: "client too slow"]).count == 1, "only the stalled socket")
            try await stalled.resumeReading()
            let (received, close) = try await readNumberedMessagesToClose(stalled)
            #expect(close.code == 1008)
            #expect(close.reason == "client too slow")
            #expect(received < count, "the stalled socket got \(received) of \(count) before its close")
        }
    }
}

/// Reads what a resumed socket still had, the zero-padded numbers 1, 2, 3... in order, up to its
/// close frame: how many came first, and the close. Anything else fails the test.
private func readNumberedMessagesToClose(_ socket: WebSocketClient) async throws
    -> (received: Int, close: (code: UInt16?, reason: String))
{
    var received = 0
    while true {
        switch try await socket.next(timeout: 30) {
        case .text(let text):
            received += 1
            #expect(Int(text.drop(while: { $0 == "0" })) == received)
        case .close(let code, let reason):
            return (received, (code, reason))
        case .ping, .pong:
            continue
        case let other:
            throw WebSocketClient.UnexpectedEvent(event: other)
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
