import BridgeTestSupport
import Foundation

/// Scenario: a bulk UPDATE's burst (--burst-count NOTIFYs of 1 KB in one transaction) to
/// --burst-sockets sockets on one channel, of which --burst-slow read at --burst-rate bytes/s
/// (slower than the burst, but reading) and one never reads. Every progressing socket must
/// get everything in order and none be cut off; the stalled one is cut when its position
/// leaves the delivery window; the server's memory must stay near one copy of the burst.
extension BenchContext {
    func runBurst() async throws {
        let s = sizes
        // The 1008 close of the stalled socket is logged at info; the bench reads it in the log.
        try await withServer("burst", environment: serverEnvironment.merging(["PGWS_LOG_LEVEL": "info"]) { $1 }) {
            server in
            let channel = channel("burst")
            let ordinary = s.burstSockets - s.burstSlow - 1
            try await withWorkers(spec(port: server.port, channel: channel, count: ordinary)) { fleet, _ in
                let path = "/\(channel)/\(TestTokens.mint(mode: "r"))"
                var slow: [WebSocketClient] = []
                for _ in 0..<s.burstSlow {
                    let client = try await WebSocketClient.connect(port: server.port, path: path)
                    try await client.limitReading(bytesPerSecond: s.burstRate)
                    slow.append(client)
                }
                let stalled = try await WebSocketClient.connect(port: server.port, path: path)
                try await stalled.pauseReading()
                try await Task.sleep(for: .milliseconds(500))
                guard let idleKB = server.rssKB else { throw BenchFailure("cannot read the server's VmRSS") }
                // Resets VmHWM to the current RSS (Linux's clear_refs 5), so the peak is the burst's.
                try? "5".write(toFile: "/proc/\(server.pid)/clear_refs", atomically: false, encoding: .utf8)

                let stream = NotifyStream(
                    phase: nextPhase(), channel: channel, count: s.burstCount, payloadSize: 1024,
                    kind: .burst(batch: s.burstCount))
                say("  burst \(Report.grouped(s.burstCount)) × 1 KB to \(Report.grouped(s.burstSockets)) sockets")
                let phase = stream.phase
                let count = s.burstCount
                let readers = slow
                let slowReaders = Task { () -> [SlowReaderOutcome] in
                    await withTaskGroup(of: SlowReaderOutcome.self) { group in
                        for client in readers {
                            group.addTask { await Self.readAll(client, phase: phase, count: count) }
                        }
                        var outcomes: [SlowReaderOutcome] = []
                        for await outcome in group { outcomes.append(outcome) }
                        return outcomes
                    }
                }
                let (sent, received, _, _) = try await measure(
                    stream, fleet: fleet, server: server, label: "burst")
                let outcomes = await slowReaders.value
                let peakKB = ProcessStats.status(pid: server.pid, "VmHWM")

                // The stalled socket: cut once its position leaves the window (30 s by default),
                // unless its kernel buffers held the whole burst and it never fell behind.
                let cutAt = try await waitForLogLine(server, containing: "client too slow", timeout: 45)
                try await stalled.resumeReading()
                let stalledOutcome = await Self.readAll(stalled, phase: phase, count: count)

                let burstBytes = Double(s.burstCount * 1024)
                let progressingClosed = outcomes.filter { $0.closed }.count
                let incomplete = outcomes.filter { !$0.complete }.count
                let lastDone = outcomes.compactMap(\.finishedMicros).max().map { max($0, received.lastReceive) }
                let workload =
                    "\(Report.grouped(s.burstSockets)) sockets on one channel: \(ordinary) reading freely (worker processes), \(s.burstSlow) reading at \(Report.grouped(s.burstRate)) B/s each (in the bench process), 1 not reading; "
                    + "\(Report.grouped(s.burstCount)) NOTIFYs of 1 KB in one statement (one transaction), sent in \(Report.format(sent.seconds * 1000, "ms"))"
                report.add(
                    "burst", "progressing sockets closed (of \(ordinary + s.burstSlow))",
                    Double(progressingClosed + incomplete), "", target: .atMost(0),
                    method:
                        "slow readers that got a close frame or not every NOTIFY in order, plus worker sockets (the run fails if any worker socket missed one)",
                    workload: workload)
                report.add(
                    "burst", "time until the last progressing socket had everything",
                    lastDone.map { Double($0 - sent.firstSend) / 1e6 }, "s",
                    method: "last frame received by any progressing socket - first statement sent", workload: workload)
                report.add(
                    "burst", "server peak RSS above idle",
                    peakKB.map { Double($0 - idleKB) / 1024 }, "MB",
                    target: .atMost(2.5 * burstBytes / 1_048_576),
                    method:
                        "VmHWM (reset just before the burst) - VmRSS with every socket open, before the burst; target 2.5 × the burst's payload",
                    workload: workload)
                report.add(
                    "burst", "stalled socket closed after",
                    cutAt.map { Double($0 - sent.firstSend) / 1e6 }, "s",
                    method:
                        "when the server logged its 1008 'client too slow' close - first statement sent (the default window is 30 s / 64 MiB)",
                    workload: workload)
                switch (cutAt, stalledOutcome.closed, stalledOutcome.complete) {
                case (_?, true, _):
                    break
                case (nil, false, true):
                    report.note("burst: the stalled socket never fell behind (its kernel buffers held the whole burst)")
                default:
                    report.fail("burst", "the stalled socket was neither cut off with 1008 nor given everything")
                }
                for client in slow + [stalled] { await client.disconnect() }
                _ = try await fleet.close()
            }
        }
    }

    struct SlowReaderOutcome: Sendable {
        var complete = false
        var closed = false
        var finishedMicros: Int64? = nil
    }

    /// Reads `count` NOTIFYs of `phase` in order from a slow reader.
    static func readAll(_ client: WebSocketClient, phase: Int, count: Int) async -> SlowReaderOutcome {
        var outcome = SlowReaderOutcome()
        var expected = 0
        while expected < count {
            switch try? await client.next(timeout: 120) {
            case .text(let text)?:
                guard let fields = Payload.parse(text), fields.tag == phase else { continue }
                guard fields.seq == expected else { return outcome }
                expected += 1
            case .ping?, .pong?:
                continue
            case .close?, .disconnected?:
                outcome.closed = true
                return outcome
            default:
                return outcome
            }
        }
        outcome.complete = true
        outcome.finishedMicros = Clock.wallMicros()
        return outcome
    }

    /// The bench's wall clock when a line containing `text` was first seen in the server's
    /// log (checked every 20 ms).
    private func waitForLogLine(_ server: BenchServer, containing text: String, timeout: Double) async throws -> Int64?
    {
        let deadline = Clock.monotonic() + timeout
        while Clock.monotonic() < deadline {
            if server.process.log.contains(text) { return Clock.wallMicros() }
            try await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }
}
