import BridgeTestSupport
import Foundation
import PostgresWebSockets

/// Scenario 4: N idle reading sockets, each with its own token: handshake rate (every
/// JWT verified) and the server's memory per open socket.
extension BenchContext {
    func runConnections() async throws {
        let s = sizes
        try await withServer("connections") { server in
            // The server has served /health; let it settle before the memory baseline.
            try await Task.sleep(for: .milliseconds(500))
            guard let rssBefore = server.rssKB else { throw BenchFailure("cannot read the server's VmRSS") }
            var spec = spec(port: server.port, channel: channel("idle"), count: s.idleSockets)
            spec.tokenPerSocket = true
            say("  connections: \(Report.grouped(s.idleSockets)) sockets")
            let cpuBefore = server.cpuSeconds
            try await withWorkers(spec) { fleet, opened in
                let cpu = both(cpuBefore, server.cpuSeconds).map { $1 - $0 }
                try await Task.sleep(for: .seconds(1))
                let health = try await server.health()
                guard health.connections == s.idleSockets else {
                    throw BenchFailure(
                        "/health reports \(health.connections) connections with \(s.idleSockets) sockets open")
                }
                guard let rssAfter = server.rssKB else { throw BenchFailure("cannot read the server's VmRSS") }
                let seconds = Double(opened.endMicros - opened.startMicros) / 1e6
                let workers = (s.idleSockets + s.socketsPerWorker - 1) / s.socketsPerWorker
                report.add(
                    "connections", "\(Report.grouped(s.idleSockets)) sockets: handshakes/s",
                    Double(opened.opened) / seconds, "/s",
                    target: .atLeast(5000),
                    method:
                        "sockets / (last 101 received - first connect), \(workers) worker process(es) with \(s.handshakeConcurrency) handshakes in flight each; every socket its own HS256 token (distinct sid claim), all on one channel; TCP connect + upgrade + JWT check + 101"
                )
                let handshakeMethod = "per socket: connect start to verified 101, at that concurrency"
                report.add(
                    "connections", "handshake time p50", ms(opened.handshake.percentile(50)), "ms",
                    method: handshakeMethod)
                report.add(
                    "connections", "handshake time p99", ms(opened.handshake.percentile(99)), "ms",
                    method: handshakeMethod)
                report.add(
                    "connections", "server CPU per handshake", cpu.map { $0 / Double(opened.opened) * 1e6 }, "µs",
                    method: "server utime+stime (/proc/<pid>/stat) while the sockets opened, / sockets")
                report.add(
                    "connections", "server RSS per idle socket", Double(rssAfter - rssBefore) / Double(s.idleSockets),
                    "KiB",
                    target: s.idleSockets >= 10_000 ? .atMost(8) : nil,
                    method:
                        "(VmRSS 1 s after all sockets opened - VmRSS of the fresh server before) / sockets (target applies from 10,000 sockets)",
                    workload:
                        "server VmRSS from \(Report.grouped(rssBefore)) KiB to \(Report.grouped(rssAfter)) KiB with \(Report.grouped(s.idleSockets)) idle sockets"
                )
                // Idle sockets must still all be open: none closed or dropped by the server.
                let check = try await fleet.collect(phase: 0, expected: 0, stallSeconds: 0.1)
                guard check.isClean else { throw BenchFailure("idle sockets: \(check.problems)") }
                let closed = try await fleet.close()
                if closed.stillOpen > 0 {
                    report.note("connections: \(closed.stillOpen) sockets still open 30 s after their close frame")
                }
            }
        }
        try await runSignedHandshakes()
    }
}

extension BenchContext {
    /// Handshakes/s with RS256 and ES256 tokens beside the HS256 row: a fresh server whose
    /// `jwt-secret` is the public JWK, every socket its own token signed by the key.
    func runSignedHandshakes() async throws {
        let s = sizes
        let count = max(1, s.idleSockets / 2)
        for kind in [TestSigningKey.Kind.rs256, .es256] {
            let key = try TestSigningKey(kind, kid: "bench-\(kind.rawValue)")
            var extra = serverEnvironment
            extra["PGWS_JWT_SECRET"] = key.publicJWK
            try await withServer("connections \(kind.rawValue)", environment: extra) { server in
                var spec = spec(port: server.port, channel: channel("signed"), count: count)
                spec.signingKey = SigningKeySpec(kind: kind, kid: key.kid, privateKeyPEM: key.privateKeyPEM)
                say("  connections: \(Report.grouped(count)) sockets, \(kind.rawValue) tokens")
                let cpuBefore = server.cpuSeconds
                try await withWorkers(spec) { fleet, opened in
                    let cpu = both(cpuBefore, server.cpuSeconds).map { $1 - $0 }
                    let seconds = Double(opened.endMicros - opened.startMicros) / 1e6
                    report.add(
                        "connections", "\(Report.grouped(count)) sockets, \(kind.rawValue) tokens: handshakes/s",
                        Double(opened.opened) / seconds, "/s",
                        method:
                            "as the HS256 row: sockets / (last 101 - first connect); each socket its own token signed with the \(kind.rawValue) key, the server's jwt-secret its public JWK"
                    )
                    report.add(
                        "connections", "\(kind.rawValue) tokens: server CPU per handshake",
                        cpu.map { $0 / Double(opened.opened) * 1e6 }, "µs",
                        method: "server utime+stime while the sockets opened, / sockets")
                    _ = try await fleet.close()
                }
            }
        }
        addVerificationCosts()
    }

    /// What one token's verification costs, by algorithm, in this process (release build).
    func addVerificationCosts() {
        let rounds = sizes.quick ? 200 : 2000
        var rows: [(String, JWTVerifier, [String])] = []
        let hmacVerifier = JWTVerifier(secret: Array(TestTokens.secret.utf8))
        rows.append(
            (
                "HS256", hmacVerifier,
                (0..<rounds).map { TestTokens.mint(mode: "r", extra: [("sid", .number(String($0)))]) }
            ))
        for kind in TestSigningKey.Kind.allCases {
            guard let key = try? TestSigningKey(kind, kid: "v"),
                let keys = try? JWTKeySet(secret: Array(key.publicJWK.utf8))
            else { continue }
            rows.append(
                (
                    kind.rawValue, JWTVerifier(keys: keys),
                    (0..<rounds).map { key.mint(claimsJSON: #"{"mode":"r","sid":\#($0)}"#) }
                ))
        }
        let now = Date().timeIntervalSince1970
        for (name, verifier, tokens) in rows {
            let start = Clock.monotonic()
            var failures = 0
            for token in tokens where (try? verifier.verify(Substring(token), now: now)) == nil { failures += 1 }
            let micros = (Clock.monotonic() - start) / Double(tokens.count) * 1e6
            if failures > 0 { report.fail("connections", "\(failures) \(name) tokens did not verify") }
            report.add(
                "connections", "verification cost per \(name) token", micros, "µs",
                method:
                    "JWTVerifier.verify of \(tokens.count) distinct tokens in the bench process (release build), wall time / tokens; parsing and claims included"
            )
        }
    }
}
