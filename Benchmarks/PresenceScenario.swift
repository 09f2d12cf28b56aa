import Foundation

/// Handshakes and churn with presence on and off (presence may cost at most 15 % of the
/// handshake rate). Servers alternate off, on, off, on, each fresh; a row is the better of its
/// side's two runs, so one noisy moment of the shared machine does not decide the ratio.
/// With presence on, every socket is its own member (`presence-claim = sid`, a claim each
/// token has its own value of): every handshake is a row and a join, the most PostgreSQL work.
extension BenchContext {
    func runPresence() async throws {
        let count = max(1, sizes.idleSockets / 2)
        var handshakes: [Bool: [Double]] = [:]
        var cycles: [Bool: [Double]] = [:]
        for presence in [false, true, false, true] {
            var environment = serverEnvironment
            if presence {
                environment["PGWS_PRESENCE"] = "on"
                environment["PGWS_PRESENCE_CLAIM"] = "sid"
            }
            let channel = channel("presence")
            try await withServer("presence \(presence ? "on" : "off")", environment: environment) { server in
                var spec = spec(port: server.port, channel: channel, count: count)
                spec.tokenPerSocket = true
                try await withWorkers(spec) { fleet, opened in
                    let openSeconds = Double(opened.endMicros - opened.startMicros) / 1e6
                    handshakes[presence, default: []].append(Double(opened.opened) / openSeconds)
                    if presence { try await waitForRows(channel: channel, count: count) }
                    let closed = try await fleet.close()
                    guard closed.stillOpen == 0 else {
                        throw BenchFailure("\(closed.stillOpen) sockets still open after their close frame")
                    }
                    let cycleSeconds = Double(closed.endMicros - opened.startMicros) / 1e6
                    cycles[presence, default: []].append(Double(opened.opened) / cycleSeconds)
                }
            }
        }
        let method =
            "\(Report.grouped(count)) sockets, each its own HS256 token, opened at the connections scenario's concurrency, then closed; servers alternate off/on twice, best run per side"
        func rows(_ name: String, _ values: [Bool: [Double]], what: String) {
            let off = values[false]?.max()
            let on = values[true]?.max()
            report.add("presence", "\(name), presence off", off, "/s", method: "\(what); \(method)")
            report.add("presence", "\(name), presence on", on, "/s", method: "\(what); \(method)")
            report.add(
                "presence", "\(name): on / off", on.flatMap { on in off.map { on / $0 } }, "×",
                target: name == "handshakes" ? .atLeast(0.85) : nil,
                method: "the two rows above; presence on: a pgws.presence row and a join per socket, written in batches"
            )
        }
        rows("handshakes", handshakes, what: "sockets / (last 101 - first connect)")
        rows("churn", cycles, what: "sockets / (first connect - last socket closed): open and close")
    }

    /// Proves the presence run did its work: every socket's row is in PostgreSQL.
    private func waitForRows(channel: String, count: Int) async throws {
        let uri = databaseURI
        let deadline = Clock.monotonic() + 30
        while true {
            let rows = try await onThread("bench-presence") {
                try PGSession(uri: uri).exec("SELECT count(*) FROM pgws.presence WHERE channel = $1", [channel])
            }
            if rows.first?.first.flatMap({ $0 }).flatMap({ Int($0) }) == count { return }
            guard Clock.monotonic() < deadline else {
                throw BenchFailure("pgws.presence has \(rows) rows of \(count) sockets after 30 s")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}
