import BridgeTestSupport

/// What a fleet of load sockets reports, in one process or from a worker child as JSON.
/// Every report merges with its kind, so several workers add up to one figure.

/// Which sockets a fleet opens.
struct FleetSpec: Codable, Sendable {
    var host = "127.0.0.1"
    var port: Int
    /// The channel, or the prefix of `prefix<index>` when `distinctChannels`.
    var channel: String
    var distinctChannels = false
    /// Index of the first socket: sockets are numbered across workers.
    var firstIndex = 0
    var count: Int
    /// Token mode claim: "r" readers, "w" writers.
    var mode = "r"
    /// One token for every socket (a `sid` claim makes each distinct), else one shared token.
    var tokenPerSocket = false
    /// Many-channels: socket i's stream starts at seq i (its channel's index), so a frame
    /// delivered to the wrong socket is caught.
    var seqFromIndex = false
    /// Handshakes in flight at once.
    var concurrency = 200
    var threads = 2
    /// Writers: size of each client message (the text before the server wraps it).
    var messageSize = 64
    /// Tokens signed with this key (PEM of the private key) instead of the HMAC secret.
    var signingKey: SigningKeySpec? = nil
    /// `pgws.v1` sockets instead of raw ones.
    var structured = false
    /// `pgws.v1` sockets open at `/` (token in a bearer entry) and subscribe with this `since`.
    var resumeSince: String? = nil

    func channelName(index: Int) -> String {
        distinctChannels ? "\(channel)\(index)" : channel
    }
}

struct SigningKeySpec: Codable, Sendable {
    var kind: TestSigningKey.Kind
    var kid: String
    var privateKeyPEM: String
}

struct OpenReport: Codable, Sendable {
    var requested = 0
    var opened = 0
    var failed = 0
    var failureSamples: [String] = []
    /// Wall clock (µs) when the first connect started and the last 101 arrived.
    var startMicros: Int64 = .max
    var endMicros: Int64 = 0
    /// Per socket: connect start to verified 101, µs.
    var handshake = Histogram()

    mutating func merge(_ other: OpenReport) {
        requested += other.requested
        opened += other.opened
        failed += other.failed
        failureSamples = Array((failureSamples + other.failureSamples).prefix(10))
        startMicros = min(startMicros, other.startMicros)
        endMicros = max(endMicros, other.endMicros)
        handshake.merge(other.handshake)
    }
}

/// Everything the sockets received in one phase (one NOTIFY stream), plus the problems
/// seen so far.
struct PhaseReport: Codable, Sendable {
    var phase: Int
    var expectedPerSocket = 0
    var sockets = 0
    var frames = 0
    var bytes = 0
    var firstReceive: Int64 = .max
    var lastReceive: Int64 = 0
    /// Latency of every received frame: receive wall clock minus the payload's send time.
    var latency = Histogram()
    /// For each seq, the largest latency over all sockets: NOTIFY to the last socket.
    var maxLatencyBySeq: [Int64] = []
    /// Sockets whose frames of this phase were exactly seq base ..< base + expected, in order.
    var complete = 0
    var short = 0
    var excess = 0
    var duplicates = 0
    var gaps = 0
    var misrouted = 0
    /// Since the fleet opened (not per phase): sockets closed by the server, unexpected
    /// disconnects, frames that could not be parsed.
    var closedByServer = 0
    var disconnects = 0
    var unparsable = 0
    var late = 0
    var problemSamples: [String] = []

    var isClean: Bool {
        complete == sockets && short == 0 && excess == 0 && duplicates == 0 && gaps == 0 && misrouted == 0
            && closedByServer == 0 && disconnects == 0 && unparsable == 0 && late == 0
    }

    mutating func merge(_ other: PhaseReport) {
        sockets += other.sockets
        frames += other.frames
        bytes += other.bytes
        firstReceive = min(firstReceive, other.firstReceive)
        lastReceive = max(lastReceive, other.lastReceive)
        latency.merge(other.latency)
        if other.maxLatencyBySeq.count > maxLatencyBySeq.count {
            maxLatencyBySeq += Array(repeating: -1, count: other.maxLatencyBySeq.count - maxLatencyBySeq.count)
        }
        for (seq, value) in other.maxLatencyBySeq.enumerated() where value > maxLatencyBySeq[seq] {
            maxLatencyBySeq[seq] = value
        }
        complete += other.complete
        short += other.short
        excess += other.excess
        duplicates += other.duplicates
        gaps += other.gaps
        misrouted += other.misrouted
        closedByServer += other.closedByServer
        disconnects += other.disconnects
        unparsable += other.unparsable
        late += other.late
        problemSamples = Array((problemSamples + other.problemSamples).prefix(10))
    }

    /// One line naming every problem, for a failure message.
    var problems: String {
        var parts: [String] = []
        if complete != sockets { parts.append("\(sockets - complete) of \(sockets) sockets incomplete") }
        if short > 0 { parts.append("\(short) sockets got fewer than \(expectedPerSocket) frames") }
        if excess > 0 { parts.append("\(excess) sockets got more than \(expectedPerSocket)") }
        if duplicates > 0 { parts.append("\(duplicates) duplicated or reordered frames") }
        if gaps > 0 { parts.append("\(gaps) frames missing inside sequences") }
        if misrouted > 0 { parts.append("\(misrouted) frames on the wrong socket") }
        if closedByServer > 0 { parts.append("\(closedByServer) sockets closed by the server") }
        if disconnects > 0 { parts.append("\(disconnects) sockets dropped without a close frame") }
        if unparsable > 0 { parts.append("\(unparsable) unparsable frames") }
        if late > 0 { parts.append("\(late) frames of an earlier phase arrived late") }
        let total = "\(frames) frames of \(expectedPerSocket * sockets) expected"
        return ([total] + parts).joined(separator: "; ")
            + (problemSamples.isEmpty ? "" : "; e.g. " + problemSamples.prefix(3).joined(separator: " | "))
    }
}

struct CloseReport: Codable, Sendable {
    var closed = 0
    var stillOpen = 0
    var startMicros: Int64 = .max
    var endMicros: Int64 = 0

    mutating func merge(_ other: CloseReport) {
        closed += other.closed
        stillOpen += other.stillOpen
        startMicros = min(startMicros, other.startMicros)
        endMicros = max(endMicros, other.endMicros)
    }
}

/// Commands to a worker (one JSON object per stdin line) and its answers (stdout lines).
struct WorkerCommand: Codable, Sendable {
    enum Kind: String, Codable, Sendable { case open, collect, close, exit }
    var kind: Kind
    var phase = 0
    var expected = 0
    /// Give up when no frame of the phase arrived for this many seconds.
    var stallSeconds = 20.0
}

struct WorkerReply: Codable, Sendable {
    var ready = false
    var opened: OpenReport? = nil
    var collected: PhaseReport? = nil
    var closed: CloseReport? = nil
    var error: String? = nil
}
