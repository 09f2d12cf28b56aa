import Foundation

/// Scenario 1b: the physical floor of the fan-out latency row on this machine, in this run.
/// The same load client (worker processes, `LoadHandler`, histograms) receives the same
/// stream (64 B payloads at --rate to --latency-sockets sockets) from `FloorServer`, an ideal
/// server in the bench process that only writes a ready frame to each socket: what the
/// kernel's loopback TCP and the client cost, without PostgreSQL and without the bridge.
extension BenchContext {
    static let floorDescription =
        "one write(2) per socket from one thread, frame built once; same load client; no PostgreSQL"
    static let floorLatencyMethod =
        "per frame: the worker's wall clock when its event loop read the bytes, minus the CLOCK_REALTIME the floor server stamped in the payload just before it built the frame and wrote it to the first socket; "
        + floorDescription + "; log-linear histogram (<0.8 % error)"
    static let floorLastSocketMethod = lastSocketMethod + "; " + floorDescription
    static let floorCPUMethod =
        "the floor's writing thread's own CPU (getrusage RUSAGE_THREAD, user + system) from before its first frame to after its last write, per million write(2) calls (= µs per write); "
        + floorDescription
    static let floorWriteMethod =
        "write(2) calls of the stream that the kernel did not take whole (short write or EAGAIN; the rest is queued and written before that socket's next frame); "
        + floorDescription
    static let bridgeOverFloorMethod =
        "the fanout latency row's to-last-socket percentile minus the floor's (this scenario): same sizes, same load client, measured one after the other in this run"

    func runFloor() async throws {
        let floor = try FloorServer.start()
        do {
            try await floorRow(floor)
        } catch {
            await floor.stop()
            throw error
        }
        await floor.stop()
    }

    private func floorRow(_ floor: FloorServer) async throws {
        let s = sizes
        let spec = spec(port: floor.port, channel: channel("floor"), count: s.latencySockets)
        try await withWorkers(spec) { fleet, _ in
            let warmup = NotifyStream(
                phase: nextPhase(), channel: spec.channel, count: 20, payloadSize: 64, kind: .burst(batch: 10))
            _ = try await floorStream(warmup, floor: floor, fleet: fleet, label: "floor warm-up")
            let stream = NotifyStream(
                phase: nextPhase(), channel: spec.channel, count: s.rateCount, payloadSize: 64,
                kind: .rate(perSecond: s.rate))
            let label = "raw write(2) fan-out 64 B @\(Int(s.rate))/s × \(Report.grouped(s.latencySockets))"
            say("  floor \(label)")
            let (sent, received, clientCPU) = try await floorStream(stream, floor: floor, fleet: fleet, label: label)
            var workload = workloadText(
                stream, sockets: received.sockets, sent: sent.sent, received: received, serverCPU: sent.cpuSeconds,
                clientCPU: clientCPU,
                streamText:
                    "\(stream.count) frames standing in for NOTIFYs, paced at \(Int(s.rate))/s, each built once and written to every socket",
                server: "floor thread")
            workload +=
                "; floor thread CPU split user \(Report.format(sent.userSeconds, "s")), system \(Report.format(sent.systemSeconds, "s")) (tick-sampled split of an exact total)"
                + "; one write pass over \(Report.grouped(sent.sockets)) sockets took p50 \(Report.format(ms(sent.pass.percentile(50)) ?? 0, "ms")), p99 \(Report.format(ms(sent.pass.percentile(99)) ?? 0, "ms"))"
                + "; \(Report.grouped(sent.writes)) whole writes, \(sent.shortWrites) short, \(sent.wouldBlock) EAGAIN, \(sent.queued) queued behind them"
            addLatencyRow(
                "floor", label, received, method: Self.floorLatencyMethod, lastMethod: Self.floorLastSocketMethod,
                workload: workload, strict: false)
            report.add(
                "floor", "\(label): CPU per 1M writes",
                sent.frames > 0 && sent.sockets > 0 ? sent.cpuSeconds / Double(sent.frames * sent.sockets) * 1e6 : nil,
                "s", method: Self.floorCPUMethod, workload: workload)
            report.add(
                "floor", "\(label): short writes or EAGAIN", Double(sent.shortWrites + sent.wouldBlock),
                "", target: .atMost(0), method: Self.floorWriteMethod, workload: workload)
            addBridgeOverFloor(received)
            let closed = try await fleet.close()
            if closed.stillOpen > 0 {
                report.note("floor: \(closed.stillOpen) sockets still open 30 s after their close frame")
            }
        }
    }

    /// Sends `stream` from the floor server and collects it with the same checks as fanout's;
    /// fails on any frame the floor server could not write.
    private func floorStream(
        _ stream: NotifyStream, floor: FloorServer, fleet: WorkerFleet, label: String
    ) async throws -> (sent: FloorSendReport, received: PhaseReport, clientCPUSeconds: Double?) {
        let result = try await deliver(stream, fleet: fleet, label: label) { try await floor.send(stream) }
        guard result.sent.sockets == fleet.count, result.sent.failed == 0 else {
            throw BenchFailure(
                "\(label): the floor server wrote to \(result.sent.sockets) of \(fleet.count) sockets, \(result.sent.failed) frames failed"
            )
        }
        return result
    }

    /// The fanout latency row minus the floor, to the last socket, when fanout ran in this run.
    private func addBridgeOverFloor(_ floor: PhaseReport) {
        let last = floor.lastSocketLatencies
        guard let row = fanoutLatency[Self.lastSocketRowKey], let p50 = exactPercentile(last, 50),
            let p99 = exactPercentile(last, 99)
        else {
            report.note("floor: no fanout latency row in this run to compare with (run fanout too)")
            return
        }
        report.add(
            "floor", "bridge over floor, \(row.label): to last socket p50", ms(row.p50 - p50), "ms",
            method: Self.bridgeOverFloorMethod)
        report.add(
            "floor", "bridge over floor, \(row.label): to last socket p99", ms(row.p99 - p99), "ms",
            method: Self.bridgeOverFloorMethod)
    }
}
