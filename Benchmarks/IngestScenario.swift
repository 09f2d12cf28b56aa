/// Scenario 3: writer sockets send text frames as fast as they can; a bare libpq listener
/// counts what reaches PostgreSQL (as the server's JSON envelopes), checking every
/// writer's sequence. Compared with one-NOTIFY-per-transaction statements from libpq.
extension BenchContext {
    func runIngest() async throws {
        let s = sizes
        try await withServer("ingest") { server in
            let base = channel("ingest")
            let each = s.ingestChannelEach
            let channelFor: (Int) -> String = { each ? "\(base)_\($0)" : base }
            let sink = IngestSink(writers: s.writers, channelFor: channelFor)
            let listener = try NotificationListener(
                uri: databaseURI, channels: each ? (0..<s.writers).map(channelFor) : [base], sink: sink)
            var spec = spec(port: server.port, channel: each ? base + "_" : base, count: s.writers)
            spec.distinctChannels = each
            spec.mode = "w"
            spec.messageSize = s.messageSize
            let fleet = SocketFleet(spec: spec)
            let total = s.writers * s.messages
            let received: Bool
            let cpu: Double?
            let start: Int64
            do {
                let opened = await fleet.open()
                guard opened.failed == 0 else {
                    throw BenchFailure("\(opened.failed) writer handshakes failed: \(opened.failureSamples.prefix(3).joined(separator: " | "))")
                }
                say("  ingest: \(s.writers) writers × \(s.messages) messages")
                let cpuBefore = server.cpuSeconds
                start = Clock.wallMicros()
                await fleet.startWriting(count: s.messages)
                received = await listener.wait(forTotal: total, stallSeconds: s.stallSeconds)
                cpu = both(cpuBefore, server.cpuSeconds).map { $1 - $0 }
                let losses = await fleet.losses()
                _ = await fleet.close(timeout: 10)
                await fleet.shutdown()
                if let failure = await listener.stop() { throw BenchFailure("the ingest listener lost its connection: \(failure)") }
                try server.checkAlive("during ingest")
                let complete = sink.completeWriters(expected: s.messages)
                guard received, sink.total == total, complete == s.writers, sink.duplicates == 0, sink.gaps == 0,
                    sink.malformed == 0, losses.count == 0
                else {
                    throw BenchFailure(
                        "ingest: \(sink.total) of \(total) messages reached PostgreSQL; \(s.writers - complete) writers incomplete; "
                            + "\(sink.duplicates) duplicated/reordered, \(sink.gaps) missing in sequence, \(sink.malformed) malformed; "
                            + "\(losses.count) sockets closed/dropped; e.g. \((sink.samples + losses.samples).prefix(3).joined(separator: " | "))")
                }
            } catch {
                _ = await listener.stop()
                await fleet.shutdown()
                throw error
            }

            let seconds = Double(sink.lastReceive - start) / 1e6
            let rate = Double(sink.total) / seconds
            let where_ = each ? "each writer on its own channel" : "all writers on one channel"
            report.add(
                "ingest", "\(s.writers) writers × \(Report.grouped(s.messages)), \(s.messageSize) B: messages reaching PostgreSQL/s",
                rate, "/s", target: .atLeast(100_000),
                method: "\(where_), token mode w, one in-process client (\(s.clientThreads) event loops) writing masked text frames as fast as each socket takes them; messages counted by a bare libpq LISTEN connection / (last received - writers started)")
            let latencyMethod = "writer's wall clock stamped in the message just before it was written, to the bare libpq listener's wall clock when it read the envelope"
            report.add("ingest", "message to PostgreSQL listener p50", ms(sink.latency.percentile(50)), "ms", method: latencyMethod)
            report.add("ingest", "message to PostgreSQL listener p99", ms(sink.latency.percentile(99)), "ms", method: latencyMethod)
            report.add(
                "ingest", "server CPU per message", cpu.map { $0 / Double(total) * 1e6 }, "µs",
                method: "server utime+stime (/proc/<pid>/stat) from the writers' start until the listener had every message, / messages")

            // PostgreSQL's rate of one NOTIFY per transaction, same payload size as the envelopes.
            let envelopeSize = min(7999, max(48, sink.envelopeBytes / max(1, sink.total)))
            let stream = NotifyStream(
                phase: nextPhase(), channel: channel("ingest_baseline"), count: s.baselineNotifies,
                payloadSize: envelopeSize, kind: .singles)
            say("  ingest baseline: \(s.baselineNotifies) single-NOTIFY transactions")
            let baselineSink = StreamSink(phase: stream.phase)
            let baselineListener = try NotificationListener(uri: databaseURI, channels: [stream.channel], sink: baselineSink)
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
                method: stream.methodText + ", \(envelopeSize) B payloads (the envelopes' mean size); statements / (last answer - first sent); every NOTIFY checked on a LISTEN connection")
            report.add(
                "ingest", "bridge ingest / one-per-transaction", rate / baselineRate, "x", target: .atLeast(4),
                method: "ratio of the two rates above, measured one after the other in this run")
        }
    }
}
