/// The counters of one phase on one event loop.
final class PhaseStats {
    var latency = Histogram()
    var frames = 0
    var bytes = 0
    var firstReceive = Int64.max
    var lastReceive: Int64 = 0
    var maxLatencyBySeq: [Int64] = []
    var duplicates = 0
    var gaps = 0
    var misrouted = 0

    func record(seq: Int, latency value: Int64, now: Int64, bytes count: Int) {
        latency.record(value)
        frames += 1
        bytes += count
        if now < firstReceive { firstReceive = now }
        if now > lastReceive { lastReceive = now }
        if seq >= 0 && seq < 10_000_000 {
            if seq >= maxLatencyBySeq.count {
                maxLatencyBySeq += Array(repeating: -1, count: seq + 1 - maxLatencyBySeq.count)
            }
            if value > maxLatencyBySeq[seq] { maxLatencyBySeq[seq] = value }
        }
    }
}

/// Everything the sockets of one event loop record: plain state touched only on that loop,
/// so counting a frame takes no lock and no allocation.
final class LoopStats {
    private var phases: [Int: PhaseStats] = [:]
    private var cachedPhase = Int.min
    private var cached = PhaseStats()
    /// Sockets that completed their handshake, in order.
    private(set) var sockets: [LoadHandler] = []
    private(set) var openSockets = 0
    private(set) var closedByServer = 0
    private(set) var disconnects = 0
    private(set) var unparsable = 0
    /// Frames of an earlier phase that arrived after a later one began: duplicates or
    /// frames held back past their phase's check.
    private(set) var late = 0
    private(set) var problemSamples: [String] = []

    func phase(_ phase: Int) -> PhaseStats {
        if phase == cachedPhase { return cached }
        let stats: PhaseStats
        if let existing = phases[phase] {
            stats = existing
        } else {
            stats = PhaseStats()
            phases[phase] = stats
        }
        cachedPhase = phase
        cached = stats
        return stats
    }

    func framesReceived(phase: Int) -> Int { phases[phase]?.frames ?? 0 }

    func socketOpened(_ socket: LoadHandler) {
        sockets.append(socket)
        openSockets += 1
    }

    func socketClosed(byServer: Bool, unexpected: Bool, detail: String) {
        openSockets -= 1
        if byServer { closedByServer += 1 }
        if unexpected { disconnects += 1 }
        if byServer || unexpected { problem(detail) }
    }

    func unparsableFrame(_ detail: String) {
        unparsable += 1
        problem(detail)
    }

    func lateFrame(_ detail: String) {
        late += 1
        problem(detail)
    }

    func problem(_ detail: String) {
        if problemSamples.count < 10 { problemSamples.append(detail) }
    }

    /// The phase's figures and a per-socket check of count and order.
    func report(phase number: Int, expected: Int) -> PhaseReport {
        var report = PhaseReport(phase: number, expectedPerSocket: expected)
        let stats = phases[number] ?? PhaseStats()
        report.sockets = sockets.count
        report.frames = stats.frames
        report.bytes = stats.bytes
        report.firstReceive = stats.firstReceive
        report.lastReceive = stats.lastReceive
        report.latency = stats.latency
        report.maxLatencyBySeq = stats.maxLatencyBySeq
        report.duplicates = stats.duplicates
        report.gaps = stats.gaps
        report.misrouted = stats.misrouted
        for socket in sockets {
            switch socket.verdict(phase: number, expected: expected) {
            case .complete: report.complete += 1
            case .short: report.short += 1
            case .excess: report.excess += 1
            case .disordered: break
            }
        }
        report.closedByServer = closedByServer
        report.disconnects = disconnects
        report.unparsable = unparsable
        report.late = late
        report.problemSamples = problemSamples
        return report
    }
}
