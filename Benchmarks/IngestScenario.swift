/// Scenario 3: writer sockets send text frames; a bare libpq listener counts what reaches
/// PostgreSQL (as the server's JSON envelopes), checking every writer's sequence. Run twice,
/// each on a fresh server: as fast as the sockets take the frames, then with each writer
/// holding at most --ingest-window messages not yet seen by the listener. Compared with
/// one-NOTIFY-per-transaction statements from libpq.
extension BenchContext {
    struct IngestResult {
        var rate: Double
        var envelopeSize: Int
    }

    func runIngest() async throws {
        let s = sizes
        var results: [(label: String, result: IngestResult)] = []
        var windows: [Int?] = [nil]
        if s.ingestWindow > 0 { windows.append(s.ingestWindow) }
        for window in windows {
            let label = window.map { "window \($0)/writer" } ?? "unbounded"
            do {
                let result = try await withServer("ingest") { server in
                    try await measureIngest(server: server, window: window, label: label)
                }
                results.append((label, result))
            } catch {
                report.fail("ingest", "\(label): \(error)")
            }
        }
        guard let envelopeSize = results.first?.result.envelopeSize else { return }

        // PostgreSQL's rate of one NOTIFY per transaction, same payload size as the envelopes.
        let stream = NotifyStream(
            phase: nextPhase(), channel: channel("ingest_baseline"), count: s.baselineNotifies,
            payloadSize: envelopeSize, kind: .singles)
        say("  ingest baseline: \(s.baselineNotifies) single-NOTIFY transactions")
        let baselineSink = StreamSink(phase: stream.phase)
        let baselineListener = try NotificationListener(
            uri: databaseURI, channels: [stream.channel], sink: baselineSink)
        let sent: SendReport
        do {
            sent = try await NotifySender.send(stream, uri: databaseURI)
        } catch {
            _ = await baselineListener.stop()
            throw error
        }
        _ = await baselineListener.wait(forTotal: stream.count, stallSeconds: s.stallSeconds)
        _ = await baselineListener.stop()
        let direct = baselineSink.report(expected: stream.count)
        guard direct.isClean else { throw BenchFailure("ingest baseline: \(direct.problems)") }
        let baselineRate = Double(sent.notifies) / sent.seconds
        report.add(
            "ingest", "PostgreSQL one NOTIFY per transaction: statements/s", baselineRate, "/s",
            method: "statements / (last answer - first sent); every NOTIFY checked on a LISTEN connection",
            workload: stream.methodText + ", \(envelopeSize) B payloads (the envelopes' mean size)")
        for (label, result) in results {
            report.add(
                "ingest", "bridge ingest (\(label)) / one-per-transaction", result.rate / baselineRate, "x",
                target: .atLeast(4), method: "ratio of the two rates, measured one after the other in this run")
        }
    }

    private func measureIngest(server: BenchServer, window windowSize: Int?, label: String) async throws -> IngestResult
    {
        let s = sizes
        let base = channel("ingest")
        let each = s.ingestChannelEach
        let channelFor: (Int) -> String = { each ? "\(base)_\($0)" : base }
        let window = windowSize.map { WriterWindow(writers: s.writers, size: $0) }
        let sink = IngestSink(writers: s.writers, window: window, channelFor: channelFor)
        let listener = try NotificationListener(
            uri: databaseURI, channels: each ? (0..<s.writers).map(channelFor) : [base], sink: sink)
        var spec = spec(port: server.port, channel: each ? base + "_" : base, count: s.writers)
        spec.distinctChannels = each
        spec.mode = "w"
        spec.messageSize = s.messageSize
        let fleet = SocketFleet(spec: spec)
        let total = s.writers * s.messages
        let cpu: Double?
        let start: Int64
        do {
            let opened = await fleet.open()
            guard opened.failed == 0 else {
                throw BenchFailure(
                    "\(opened.failed) writer handshakes failed: \(opened.failureSamples.prefix(3).joined(separator: " | "))"
                )
            }
            say("  ingest (\(label)): \(s.writers) writers × \(s.messages) messages")
            let cpuBefore = server.cpuSeconds
            start = Clock.wallMicros()
            await fleet.startWriting(count: s.messages, window: window)
            let received = await listener.wait(forTotal: total, stallSeconds: s.stallSeconds)
            cpu = both(cpuBefore, server.cpuSeconds).map { $1 - $0 }
            let losses = await fleet.losses()
            _ = await fleet.close(timeout: 10)
            await fleet.shutdown()
            if let failure = await listener.stop() {
                throw BenchFailure("the ingest listener lost its connection: \(failure)")
            }
            try server.checkAlive("during ingest")
            let complete = sink.completeWriters(expected: s.messages)
            guard received, sink.total == total, complete == s.writers, sink.duplicates == 0, sink.gaps == 0,
                sink.malformed == 0, losses.count == 0
            else {
                throw BenchFailure(
                    "\(sink.total) of \(total) messages reached PostgreSQL; \(s.writers - complete) writers incomplete; "
                        + "\(sink.duplicates) duplicated/reordered, \(sink.gaps) missing in sequence, \(sink.malformed) malformed; "
                        + "\(losses.count) sockets closed/dropped; e.g. \((sink.samples + losses.samples).prefix(3).joined(separator: " | "))"
                )
            }
        } catch {
            _ = await listener.stop()
            await fleet.shutdown()
            throw error
        }

        let rate = Double(sink.total) / (Double(sink.lastReceive - start) / 1e6)
        let workload =
            "\(s.writers) writer sockets (token mode w) \(each ? "each on its own channel" : "all on one channel"), \(Report.grouped(s.messages)) messages of \(s.messageSize) B each, "
            + "one in-process client with \(s.clientThreads) event loops writing masked text frames as fast as each socket takes them"
            + (windowSize.map { ", each writer holding at most \($0) messages not yet seen by the listener" } ?? "")
        report.add(
            "ingest", "\(label): messages reaching PostgreSQL/s", rate, "/s", target: .atLeast(100_000),
            method:
                "messages counted on a bare libpq LISTEN connection (each envelope's writer and sequence checked) / (last received - writers started)",
            workload: workload)
        let latencyMethod =
            "writer's wall clock stamped in the message just before it was written, to the bare libpq listener's wall clock when it read the envelope"
        report.add(
            "ingest", "\(label): message to PostgreSQL listener p50", ms(sink.latency.percentile(50)), "ms",
            method: latencyMethod, workload: workload)
        report.add(
            "ingest", "\(label): message to PostgreSQL listener p99", ms(sink.latency.percentile(99)), "ms",
            method: latencyMethod, workload: workload)
        report.add(
            "ingest", "\(label): server CPU per message", cpu.map { $0 / Double(total) * 1e6 }, "µs",
            method:
                "server utime+stime (/proc/<pid>/stat) from the writers' start until the listener had every message, / messages",
            workload: workload)
        return IngestResult(rate: rate, envelopeSize: min(7999, max(48, sink.envelopeBytes / max(1, sink.total))))
    }
}
