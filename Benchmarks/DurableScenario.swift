import BridgeTestSupport
import Foundation

/// Scenario: durable channels beside plain NOTIFY, on servers with `durable = on`.
/// - fan-out: the same raw sockets get a paced stream of plain NOTIFYs, then one of
///   `pgws.publish` messages, on one durable channel (target: CPU per delivery within 20 %);
/// - publish rate from SQL: many connections, one message per transaction, and statements
///   of 100, each beside the same with `pg_notify` (target: at least half the rate of
///   one-notify transactions);
/// - replay: --durable-replay retained messages to one `pgws.v1` client that subscribes
///   with `since` 0 on a server that never saw them (target: 100,000 messages/s or more).
extension BenchContext {
    func runDurable() async throws {
        var environment = serverEnvironment
        environment["PGWS_DURABLE"] = "on"
        try await withServer("durable", environment: environment) { server in
            try await fanoutRows(server)
            try await publishRows()
        }
        try await replayRow(environment)
    }

    private func makeDurable(_ channel: String) async throws {
        let uri = databaseURI
        _ = try await onThread("bench-sql") {
            try PGSession(uri: uri).exec("SELECT pgws.make_durable($1)", [channel])
        }
    }

    private func fanoutRows(_ server: BenchServer) async throws {
        let s = sizes
        let channel = channel("durable")
        try await makeDurable(channel)
        let spec = spec(port: server.port, channel: channel, count: s.latencySockets)
        var cpuPerDelivery: [Bool: Double] = [:]
        try await withWorkers(spec) { fleet, _ in
            for durable in [false, true] {
                var warmup = NotifyStream(
                    phase: nextPhase(), channel: channel, count: 20, payloadSize: 64, kind: .burst(batch: 10))
                warmup.durable = durable
                _ = try await measure(warmup, fleet: fleet, server: server, label: "durable warm-up")
                var stream = NotifyStream(
                    phase: nextPhase(), channel: channel, count: s.rateCount, payloadSize: 64,
                    kind: .rate(perSecond: s.rate))
                stream.durable = durable
                let kind = durable ? "pgws.publish" : "pg_notify"
                let label = "64 B \(kind) @\(Int(s.rate))/s × \(Report.grouped(s.latencySockets)) raw sockets"
                say("  durable \(label)")
                let (sent, received, cpu, clientCPU) = try await measure(
                    stream, fleet: fleet, server: server, label: label)
                let workload = workloadText(
                    stream, sockets: received.sockets, sent: sent, received: received, serverCPU: cpu,
                    clientCPU: clientCPU)
                let perMillion = cpu.map { $0 / Double(received.frames) * 1e6 }
                cpuPerDelivery[durable] = perMillion
                report.add(
                    "durable", "\(label): server CPU per 1M deliveries", perMillion, "s", method: Self.cpuMethod,
                    workload: workload)
                report.add(
                    "durable", "\(label): latency p99", ms(received.latency.percentile(99)), "ms",
                    method: Self.latencyMethod, workload: workload)
            }
            _ = try await fleet.close()
        }
        report.add(
            "durable", "durable over plain NOTIFY: CPU per delivery",
            both(cpuPerDelivery[true], cpuPerDelivery[false]).map { $0 / $1 }, "×", target: .atMost(1.20),
            method:
                "the two CPU rows above: the same sockets of one durable channel, plain pg_notify then pgws.publish, one after the other on one server"
        )
    }

    /// Messages per second from `connections` connections sending `statement` back to back,
    /// connection `i` with `parameters(i)`.
    private func rate(
        connections: Int, statements: Int, perStatement: Int, _ sql: String,
        _ parameters: @escaping @Sendable (Int) -> [String]
    ) async throws -> Double {
        let uri = databaseURI
        let sessions = try await onThread("bench-sql") { try (0..<connections).map { _ in try PGSession(uri: uri) } }
        let start = Clock.monotonic()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, session) in sessions.enumerated() {
                let values = parameters(index)
                group.addTask {
                    try await onThread("bench-publisher") {
                        for _ in 0..<statements { try session.exec(sql, values) }
                    }
                }
            }
            try await group.waitForAll()
        }
        return Double(connections * statements * perStatement) / (Clock.monotonic() - start)
    }

    private func publishRows() async throws {
        let s = sizes
        let connections = 8
        let stored = channel("publish-rate")
        try await makeDurable(stored)
        // Offsets are gapless in commit order per channel, so publishers of one channel take
        // turns (its lock is held to commit); publishers of different channels do not. Both
        // layouts are measured; the target is for the second, the common one (a channel per
        // order, per room, per user).
        let storedEach = (0..<connections).map { channel("publish-rate-\($0)") }
        for channel in storedEach { try await makeDurable(channel) }
        let plain = channel("notify-rate")
        let plainEach = (0..<connections).map { channel("notify-rate-\($0)") }
        let payload = String(repeating: "x", count: 64)
        for spread in [false, true] {
            let layout = spread ? "a channel each" : "one channel"
            var singles: [Bool: Double] = [:]
            for durable in [false, true] {
                let sql = durable ? "SELECT pgws.publish($1, $2)" : "SELECT pg_notify($1, $2)"
                let function = durable ? "pgws.publish" : "pg_notify"
                say("  durable \(function) from \(connections) connections (\(layout)), one per transaction")
                let channels = durable ? (spread ? storedEach : [stored]) : (spread ? plainEach : [plain])
                let perSecond = try await rate(
                    connections: connections, statements: s.durablePublishes, perStatement: 1, sql
                ) { [channels[$0 % channels.count], payload] }
                singles[durable] = perSecond
                report.add(
                    "durable", "\(function), \(layout): one 64 B message per transaction", perSecond, "msg/s",
                    method:
                        "\(connections) connections (\(layout)), \(Report.grouped(s.durablePublishes)) autocommit statements each, back to back; messages over wall time"
                )
            }
            report.add(
                "durable", "pgws.publish over pg_notify, \(layout): one-message transactions per second",
                both(singles[true], singles[false]).map { $0 / $1 }, "×", target: spread ? .atLeast(0.5) : nil,
                method: "the two rows above"
                    + (spread ? "" : "; one channel's publishers take turns: its offsets follow commit order"))
        }
        var batched: [Bool: Double] = [:]
        for durable in [false, true] {
            let function = durable ? "pgws.publish" : "pg_notify"
            say("  durable \(function) in statements of 100")
            let perSecond = try await rate(
                connections: connections, statements: max(1, s.durablePublishes / 20), perStatement: 100,
                "SELECT count(\(function)($1, $2 || g)) FROM generate_series(1, 100) AS g"
            ) { _ in [durable ? stored : plain, payload] }
            batched[durable] = perSecond
            report.add(
                "durable", "\(function): statements of 100 messages", perSecond, "msg/s",
                method:
                    "\(connections) connections, statements of 100 (one transaction each) back to back; messages over wall time"
            )
        }
        report.add(
            "durable", "pgws.publish over pg_notify: batched", both(batched[true], batched[false]).map { $0 / $1 },
            "×", method: "the two rows above")
    }

    private func replayRow(_ environment: [String: String]) async throws {
        let s = sizes
        let channel = channel("replay")
        // Published before the server starts: its log never held them.
        try await withServer("durable", environment: environment) { _ in try await makeDurable(channel) }
        var stream = NotifyStream(
            phase: nextPhase(), channel: channel, count: s.durableReplay, payloadSize: 64, kind: .burst(batch: 1000))
        stream.durable = true
        _ = try await NotifySender.send(stream, uri: databaseURI)
        try await withServer("durable", environment: environment) { server in
            var spec = spec(port: server.port, channel: channel, count: 1)
            spec.structured = true
            spec.resumeSince = "0"
            say("  durable replay of \(Report.grouped(s.durableReplay)) retained messages to one pgws.v1 client")
            try await withWorkers(spec) { fleet, opened in
                let received = try await fleet.collect(
                    phase: stream.phase, expected: s.durableReplay, stallSeconds: sizes.stallSeconds)
                guard received.isClean else { throw BenchFailure("durable replay: \(received.problems)") }
                let seconds = Double(received.lastReceive - opened.startMicros) / 1e6
                report.add(
                    "durable", "replay of \(Report.grouped(s.durableReplay)) retained messages to one pgws.v1 client",
                    Double(s.durableReplay) / seconds, "msg/s", target: .atLeast(100_000),
                    method:
                        "a server that never saw them; the client opens at / and subscribes with since 0; from its connect to the last message received, every message once and in order"
                )
                _ = try await fleet.close()
            }
        }
    }
}
