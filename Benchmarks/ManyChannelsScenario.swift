import Foundation

/// Scenario 5: one socket on each of N channels: N LISTENs while opening, one NOTIFY per
/// channel, and N UNLISTENs after closing, watched through GET /health.
extension BenchContext {
    func runManyChannels() async throws {
        let s = sizes
        // Channels are let go as soon as their last socket leaves (no resume window), so the
        // UNLISTEN row measures the churn itself.
        var environment = serverEnvironment
        environment["PGWS_MAX_LAG_SECONDS"] = environment["PGWS_MAX_LAG_SECONDS"] ?? "0.001"
        try await withServer("channels", environment: environment) { server in
            let initial = try await server.health()
            guard initial.listening == 0 else {
                throw BenchFailure("a fresh server already listens on \(initial.listening) channels")
            }
            var spec = spec(port: server.port, channel: channel("mc_"), count: s.channels)
            spec.distinctChannels = true
            spec.tokenPerSocket = true
            spec.seqFromIndex = true
            let n = Report.grouped(s.channels)
            say("  channels: \(n) sockets on \(n) channels")
            try await withWorkers(spec) { fleet, opened in
                let openSeconds = Double(opened.endMicros - opened.startMicros) / 1e6
                report.add(
                    "channels", "open \(n) sockets on \(n) channels (\(n) LISTENs)", openSeconds, "s",
                    method:
                        "first connect to last 101 (the server answers 101 only after PostgreSQL confirmed the LISTEN); \(s.handshakeConcurrency) handshakes in flight per worker process, every socket its own token"
                )
                report.add(
                    "channels", "handshakes/s with a new LISTEN each", Double(opened.opened) / openSeconds, "/s",
                    method: "sockets / the time above")
                let (_, health) = try await server.waitForHealth(timeout: 10) { $0.listening == s.channels }
                _ = health

                let stream = NotifyStream(
                    phase: nextPhase(), channel: spec.channel, count: s.channels, payloadSize: 64,
                    kind: .channels(batch: 1000))
                let (sent, received, _, _) = try await measure(
                    stream, fleet: fleet, server: server, label: "one NOTIFY per channel", perSocket: 1)
                // Nothing more may arrive: check every socket again a moment later.
                try await Task.sleep(for: .milliseconds(300))
                let again = try await fleet.collect(phase: stream.phase, expected: 1, stallSeconds: 0.1)
                guard again.isClean else { throw BenchFailure("after one NOTIFY per channel: \(again.problems)") }
                report.add(
                    "channels", "one NOTIFY on each of \(n) channels: all delivered after",
                    Double(received.lastReceive - sent.firstSend) / 1e3,
                    "ms",
                    method: "last frame received - first statement sent; " + stream.methodText
                        + "; each socket must get exactly its channel's NOTIFY")
                report.add(
                    "channels", "per-channel NOTIFY latency p50", ms(received.latency.percentile(50)), "ms",
                    method: Self.latencyMethod)
                report.add(
                    "channels", "per-channel NOTIFY latency p99", ms(received.latency.percentile(99)), "ms",
                    method: Self.latencyMethod)

                let closeStart = Clock.wallMicros()
                let closed = try await fleet.close()
                guard closed.stillOpen == 0 else {
                    throw BenchFailure("\(closed.stillOpen) sockets still open 30 s after their close frame")
                }
                let (unlistened, _) = try await server.waitForHealth(timeout: 60) { $0.listening == 0 }
                report.add(
                    "channels", "close all, until /health says listening 0 (\(n) UNLISTENs)",
                    Double(unlistened - closeStart) / 1e6, "s",
                    method:
                        "close frames sent on every socket, then GET /health every 10 ms until \"listening\":0; the clients saw every socket closed after \(String(format: "%.2f", Double(closed.endMicros - closeStart) / 1e6)) s"
                )
            }
        }
    }
}
