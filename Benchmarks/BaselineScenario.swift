import Foundation

/// Scenario 2: the fan-out streams received by one bare libpq LISTEN connection in this
/// process: what PostgreSQL itself delivers on this machine in this run, and the bridge's
/// latency on top of it.
extension BenchContext {
    func runBaseline() async throws {
        let s = sizes
        let channel = channel("baseline")
        var baseline: [String: (p50: Double, p99: Double)] = [:]
        // Warm-up: connection and notification queue.
        _ = try await receiveDirectly(
            NotifyStream(phase: nextPhase(), channel: channel, count: 20, payloadSize: 64, kind: .burst(batch: 10)),
            label: "baseline warm-up")
        for size in s.payloads {
            for burst in [false, true] {
                let stream = NotifyStream(
                    phase: nextPhase(), channel: channel, count: burst ? s.burst : s.rateCount, payloadSize: size,
                    kind: burst ? .burst(batch: s.batch) : .rate(perSecond: s.rate))
                let label = "\(sizeLabel(size)) \(burst ? "burst" : "@\(Int(s.rate))/s")"
                say("  baseline \(label)")
                let (sent, received) = try await receiveDirectly(stream, label: label)
                let method =
                    "a bare libpq LISTEN connection in the bench process (poll + PQconsumeInput + PQnotifies; wall clock read once per PQconsumeInput) minus the payload's send stamp"
                let workload =
                    stream.methodText + ", \(size) B payloads"
                    + "; sent in \(Report.format(sent.seconds * 1000, "ms"))"
                report.add(
                    "baseline", "PostgreSQL \(label): notifications/s", received.rate(since: sent.firstSend), "/s",
                    method:
                        "notifications received on one bare libpq LISTEN connection / (last received - first statement sent)",
                    workload: workload)
                report.add(
                    "baseline", "PostgreSQL \(label): latency p50", ms(received.latency.percentile(50)), "ms",
                    method: method, workload: workload)
                report.add(
                    "baseline", "PostgreSQL \(label): latency p99", ms(received.latency.percentile(99)), "ms",
                    method: method, workload: workload)
                report.add(
                    "baseline", "PostgreSQL \(label): latency p99.9", ms(received.latency.percentile(99.9)), "ms",
                    method: method, workload: workload)
                if let p50 = received.latency.percentile(50), let p99 = received.latency.percentile(99) {
                    baseline[Self.streamKey(size: size, burst: burst)] = (p50, p99)
                }
            }
        }
        // The bridge's overhead: fan-out latency minus PostgreSQL's for the same kind of stream.
        let overheadMethod =
            "bridge latency (fanout row) minus PostgreSQL's own (this scenario) for the same kind of stream, measured one after the other in this run"
        var pairs: [(key: String, fanout: (label: String, p50: Double, p99: Double))] = []
        for size in s.payloads {
            for burst in [false, true] {
                let key = Self.streamKey(size: size, burst: burst)
                if let fanout = fanoutLatency[key] { pairs.append((key, fanout)) }
            }
        }
        if let row = fanoutLatency[Self.latencyRowKey] { pairs.append((Self.streamKey(size: 64, burst: false), row)) }
        for (key, fanout) in pairs {
            guard let direct = baseline[key] else { continue }
            report.add(
                "baseline", "bridge overhead p50, \(fanout.label)", ms(fanout.p50 - direct.p50), "ms",
                method: overheadMethod)
            report.add(
                "baseline", "bridge overhead p99, \(fanout.label)", ms(fanout.p99 - direct.p99), "ms",
                method: overheadMethod)
        }
        if pairs.isEmpty {
            report.note(
                "baseline: no fan-out figures in this run to compare with (run fanout too for the overhead rows)")
        }
    }

    /// Sends `stream` and receives it on a fresh bare LISTEN connection; fails unless every
    /// NOTIFY arrived once, in order.
    private func receiveDirectly(_ stream: NotifyStream, label: String) async throws -> (SendReport, PhaseReport) {
        let sink = StreamSink(phase: stream.phase)
        let listener = try NotificationListener(uri: databaseURI, channels: [stream.channel], sink: sink)
        let sent: SendReport
        do {
            sent = try await NotifySender.send(stream, uri: databaseURI)
        } catch {
            _ = await listener.stop()
            throw error
        }
        _ = await listener.wait(forTotal: stream.count, stallSeconds: sizes.stallSeconds)
        if let failure = await listener.stop() {
            throw BenchFailure("baseline listener lost its connection: \(failure)")
        }
        let received = sink.report(expected: stream.count)
        guard received.isClean else { throw BenchFailure("baseline \(label): \(received.problems)") }
        return (sent, received)
    }
}
