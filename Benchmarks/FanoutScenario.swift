import Foundation

/// Scenario 1: many sockets on one channel; NOTIFY streams at a fixed rate and as fast
/// as one libpq connection sends them; then the latency row at --rate × --latency-sockets.
extension BenchContext {
    static let latencyMethod =
        "per frame: the worker's wall clock when its event loop read the bytes, minus the CLOCK_REALTIME the sender stamped in the payload just before the statement went out; log-linear histogram (<0.8 % error)"
    static let lastSocketMethod =
        "per NOTIFY: its largest latency over all sockets (when the last socket had it); exact percentiles over the stream's NOTIFYs"
    static let cpuMethod =
        "server utime+stime (/proc/<pid>/stat, 10 ms ticks), from before the stream's first statement to after its last frame arrived, per million frames delivered (= µs per frame)"

    func runFanout() async throws {
        let s = sizes
        try await withServer("fanout") { server in
            let spec = spec(port: server.port, channel: channel("fanout"), count: s.sockets)
            try await withWorkers(spec) { fleet, _ in
                // Warm-up, checked but not reported: every socket gets 20 NOTIFYs.
                let warmup = NotifyStream(
                    phase: nextPhase(), channel: spec.channel, count: 20, payloadSize: 64, kind: .burst(batch: 10))
                _ = try await measure(warmup, fleet: fleet, server: server, label: "fan-out warm-up")
                for size in s.payloads {
                    for burst in [false, true] {
                        let stream = NotifyStream(
                            phase: nextPhase(), channel: spec.channel, count: burst ? s.burst : s.rateCount,
                            payloadSize: size, kind: burst ? .burst(batch: s.batch) : .rate(perSecond: s.rate))
                        let label =
                            "\(sizeLabel(size)) \(burst ? "burst" : "@\(Int(s.rate))/s") × \(Report.grouped(s.sockets))"
                        say("  fanout \(label)")
                        if let pair = try await fanoutFigures(stream, label: label, fleet: fleet, server: server) {
                            fanoutLatency[Self.streamKey(size: size, burst: burst)] = (label, pair.p50, pair.p99)
                        }
                    }
                }
                let closed = try await fleet.close()
                if closed.stillOpen > 0 {
                    report.note("fanout: \(closed.stillOpen) sockets still open 30 s after their close frame")
                }
            }

            // The latency row: --rate NOTIFYs/s of 64 B to --latency-sockets sockets.
            let latencySpec = self.spec(port: server.port, channel: channel("fanout_latency"), count: s.latencySockets)
            try await withWorkers(latencySpec) { fleet, _ in
                let warmup = NotifyStream(
                    phase: nextPhase(), channel: latencySpec.channel, count: 20, payloadSize: 64,
                    kind: .burst(batch: 10))
                _ = try await measure(warmup, fleet: fleet, server: server, label: "latency warm-up")
                let stream = NotifyStream(
                    phase: nextPhase(), channel: latencySpec.channel, count: s.rateCount, payloadSize: 64,
                    kind: .rate(perSecond: s.rate))
                let label = "64 B @\(Int(s.rate))/s × \(Report.grouped(s.latencySockets))"
                say("  fanout latency row \(label)")
                let (sent, received, cpu, clientCPU) = try await measure(
                    stream, fleet: fleet, server: server, label: label)
                let workload = workloadText(
                    stream, sockets: received.sockets, sent: sent, received: received, serverCPU: cpu,
                    clientCPU: clientCPU)
                addLatencyRow(
                    "fanout", "latency row \(label)", received, method: Self.latencyMethod,
                    lastMethod: Self.lastSocketMethod, workload: workload,
                    strict: s.rate == 100 && s.latencySockets == 1000)
                report.add(
                    "fanout", "latency row \(label): server CPU per 1M deliveries",
                    cpu.map { $0 / Double(received.frames) * 1e6 }, "s", target: .atMost(2), method: Self.cpuMethod,
                    workload: workload)
                if let p50 = received.latency.percentile(50), let p99 = received.latency.percentile(99) {
                    fanoutLatency[Self.latencyRowKey] = (label, p50, p99)
                }
                let last = received.lastSocketLatencies
                if let p50 = exactPercentile(last, 50), let p99 = exactPercentile(last, 99) {
                    fanoutLatency[Self.lastSocketRowKey] = (label, p50, p99)
                }
                _ = try await fleet.close()
            }
        }
    }

    /// The latency row's figures: to each socket p50, p99, p99.9 and to the last socket p50,
    /// p99; with the targets (p50 < 1 ms, p99 < 5 ms) when `strict` (the row's own sizes).
    func addLatencyRow(
        _ scenario: String, _ name: String, _ received: PhaseReport, method: String, lastMethod: String,
        workload: String, strict: Bool
    ) {
        let last = received.lastSocketLatencies
        report.add(
            scenario, "\(name): to each socket p50", ms(received.latency.percentile(50)), "ms",
            target: strict ? .below(1) : nil, method: method, workload: workload)
        report.add(
            scenario, "\(name): to each socket p99", ms(received.latency.percentile(99)), "ms",
            target: strict ? .below(5) : nil, method: method, workload: workload)
        report.add(
            scenario, "\(name): to each socket p99.9", ms(received.latency.percentile(99.9)), "ms",
            method: method, workload: workload)
        report.add(
            scenario, "\(name): to last socket p50", ms(exactPercentile(last, 50)), "ms",
            target: strict ? .below(1) : nil, method: lastMethod, workload: workload)
        report.add(
            scenario, "\(name): to last socket p99", ms(exactPercentile(last, 99)), "ms",
            target: strict ? .below(5) : nil, method: lastMethod, workload: workload)
    }

    /// Adds the stream's figures; returns its p50 and p99 latency (µs).
    private func fanoutFigures(
        _ stream: NotifyStream, label: String, fleet: WorkerFleet, server: BenchServer
    ) async throws -> (p50: Double, p99: Double)? {
        let (sent, received, cpu, clientCPU) = try await measure(stream, fleet: fleet, server: server, label: label)
        let last = received.lastSocketLatencies
        let workload = workloadText(
            stream, sockets: received.sockets, sent: sent, received: received, serverCPU: cpu, clientCPU: clientCPU)
        report.add(
            "fanout", "\(label): deliveries/s", received.rate(since: sent.firstSend), "/s",
            method: "frames received by all sockets / (last frame received - first statement sent)", workload: workload)
        report.add(
            "fanout", "\(label): latency p50", ms(received.latency.percentile(50)), "ms", method: Self.latencyMethod,
            workload: workload)
        report.add(
            "fanout", "\(label): latency p99", ms(received.latency.percentile(99)), "ms", method: Self.latencyMethod,
            workload: workload)
        report.add(
            "fanout", "\(label): latency p99.9", ms(received.latency.percentile(99.9)), "ms",
            method: Self.latencyMethod, workload: workload)
        report.add(
            "fanout", "\(label): to last socket p50", ms(exactPercentile(last, 50)), "ms",
            method: Self.lastSocketMethod, workload: workload)
        report.add(
            "fanout", "\(label): to last socket p99", ms(exactPercentile(last, 99)), "ms",
            method: Self.lastSocketMethod, workload: workload)
        let perMillion = cpu.map { $0 / Double(received.frames) * 1e6 }
        report.add(
            "fanout", "\(label): server CPU per 1M deliveries", perMillion, "s",
            target: stream.payloadSize == 64 ? .atMost(2) : nil, method: Self.cpuMethod, workload: workload)
        return both(received.latency.percentile(50), received.latency.percentile(99)).map { (p50: $0, p99: $1) }
    }

    /// The stream, the sockets, how fast the sender actually sent, and the CPU the server
    /// and the load client used meanwhile (on a shared machine both compete for the cores).
    /// `streamText` replaces the stream's own description; `server` names what sent it.
    func workloadText(
        _ stream: NotifyStream, sockets: Int, sent: SendReport, received: PhaseReport, serverCPU: Double?,
        clientCPU: Double?, streamText: String? = nil, server: String = "server"
    ) -> String {
        let rate = Double(sent.notifies) / max(sent.seconds, 1e-6)
        let wall = Double(received.lastReceive - sent.firstSend) / 1e6
        let workers = (sockets + sizes.socketsPerWorker - 1) / sizes.socketsPerWorker
        var text =
            "\(Report.grouped(sockets)) sockets on one channel in \(workers) worker process(es) of \(sizes.clientThreads) event loops; "
        text += (streamText ?? stream.methodText) + ", \(stream.payloadSize) B payloads"
        text += "; sent in \(Report.format(sent.seconds * 1000, "ms")) (\(Report.grouped(Int(rate))) NOTIFY/s)"
        text += "; first send to last frame \(Report.format(wall, "s"))"
        if let serverCPU, let clientCPU {
            text +=
                ", meanwhile \(server) CPU \(Report.format(serverCPU, "s")), load client CPU \(Report.format(clientCPU, "s"))"
        }
        return text
    }
}
