import BridgeTestSupport
import Foundation
import PostgresWebSockets

/// Scenario: `pgws.v1` beside raw. The same streams to raw and to `pgws.v1` sockets in turn
/// (server CPU per delivery and latency; target: v1 within 10 % of raw), then the resume row:
/// --resume-sockets v1 sockets reconnect and subscribe with `since`, each replaying the
/// --resume-missed messages published while they were away.
extension BenchContext {
    func runStructured() async throws {
        let s = sizes
        try await withServer("v1") { server in
            var cpuPerDelivery: [Bool: Double] = [:]
            var p99: [Bool: Double] = [:]
            for structured in [false, true] {
                var spec = spec(port: server.port, channel: channel(structured ? "v1" : "raw"), count: s.latencySockets)
                spec.structured = structured
                let kind = structured ? "pgws.v1" : "raw"
                try await withWorkers(spec) { fleet, _ in
                    let warmup = NotifyStream(
                        phase: nextPhase(), channel: spec.channel, count: 20, payloadSize: 64, kind: .burst(batch: 10))
                    _ = try await measure(warmup, fleet: fleet, server: server, label: "\(kind) warm-up")
                    let stream = NotifyStream(
                        phase: nextPhase(), channel: spec.channel, count: s.rateCount, payloadSize: 64,
                        kind: .rate(perSecond: s.rate))
                    let label = "64 B @\(Int(s.rate))/s × \(Report.grouped(s.latencySockets)) \(kind) sockets"
                    say("  v1 \(label)")
                    let (sent, received, cpu, clientCPU) = try await measure(
                        stream, fleet: fleet, server: server, label: label)
                    let workload = workloadText(
                        stream, sockets: received.sockets, sent: sent, received: received, serverCPU: cpu,
                        clientCPU: clientCPU)
                    let perMillion = cpu.map { $0 / Double(received.frames) * 1e6 }
                    cpuPerDelivery[structured] = perMillion
                    p99[structured] = received.latency.percentile(99)
                    report.add(
                        "v1", "\(label): server CPU per 1M deliveries", perMillion, "s", method: Self.cpuMethod,
                        workload: workload)
                    report.add(
                        "v1", "\(label): latency p50", ms(received.latency.percentile(50)), "ms",
                        method: Self.latencyMethod, workload: workload)
                    report.add(
                        "v1", "\(label): latency p99", ms(received.latency.percentile(99)), "ms",
                        method: Self.latencyMethod, workload: workload)
                    _ = try await fleet.close()
                }
            }
            report.add(
                "v1", "pgws.v1 over raw: CPU per delivery",
                both(cpuPerDelivery[true], cpuPerDelivery[false]).map { $0 / $1 },
                "×", target: .atMost(1.10), method: "the two CPU rows above, measured one after the other on one server"
            )
            report.add(
                "v1", "pgws.v1 over raw: latency p99", both(p99[true], p99[false]).map { $0 / $1 }, "×",
                target: .atMost(1.10), method: "the two p99 rows above")
            try await resumeRow(server)
        }
    }

    /// Sockets that were away come back with `since` and replay what they missed.
    private func resumeRow(_ server: BenchServer) async throws {
        let s = sizes
        let resumeChannel = channel("resume")
        let token = TestTokens.mint(mode: "r")
        // A v1 socket of the bench's own learns the offset the others will resume from.
        let observer = try await WebSocketClient.connectV1(port: server.port, path: "/\(resumeChannel)", token: token)
        _ = try await observer.next(type: "subscribed")
        var spec = spec(port: server.port, channel: resumeChannel, count: s.resumeSockets)
        spec.structured = true
        try await withWorkers(spec) { fleet, _ in
            let last = NotifyStream(
                phase: nextPhase(), channel: resumeChannel, count: 1, payloadSize: 64, kind: .burst(batch: 1))
            _ = try await measure(last, fleet: fleet, server: server, label: "resume: last message before the drop")
            _ = try await fleet.close()
        }
        let seen = try await observer.next(type: "message")
        guard let since = seen["offset"]?.stringValue else { throw BenchFailure("resume: no offset on the message") }
        let missed = NotifyStream(
            phase: nextPhase(), channel: resumeChannel, count: s.resumeMissed, payloadSize: 64,
            kind: .burst(batch: 100))
        _ = try await NotifySender.send(missed, uri: databaseURI)
        spec.resumeSince = since
        say(
            "  v1 resume: \(Report.grouped(s.resumeSockets)) sockets × \(Report.grouped(s.resumeMissed)) missed messages"
        )
        try await withWorkers(spec) { fleet, opened in
            let received = try await fleet.collect(
                phase: missed.phase, expected: s.resumeMissed, stallSeconds: sizes.stallSeconds)
            guard received.isClean else { throw BenchFailure("resume: \(received.problems)") }
            let seconds = Double(received.lastReceive - opened.startMicros) / 1e6
            report.add(
                "v1",
                "resume: \(Report.grouped(s.resumeSockets)) sockets reconnect and replay \(Report.grouped(s.resumeMissed)) missed messages each",
                seconds, "s",
                method:
                    "first connect of the reconnecting sockets to the last replayed frame received; each socket opens at / with a bearer entry and subscribes with since (the offset of the last message before the drop); every socket got every missed message once, in order",
                workload: "\(Report.grouped(s.resumeSockets * s.resumeMissed)) frames replayed from the delivery log")
            _ = try await fleet.close()
        }
        await observer.disconnect()
    }
}
