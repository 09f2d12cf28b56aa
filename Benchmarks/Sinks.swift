import PostgresWebSockets

/// The baseline receiver: one NOTIFY stream (`p<phase>:s<seq>:...` payloads) on a bare
/// libpq connection, checked for count and order like a socket.
final class StreamSink: NotificationSink {
    let phase: Int
    private let stats = PhaseStats()
    private var nextSeq = 0
    private var disordered = false
    private var unparsable = 0
    private var samples: [String] = []

    init(phase: Int) {
        self.phase = phase
    }

    func received(channel: UnsafePointer<CChar>, payload: UnsafeRawBufferPointer, now: Int64) {
        guard let fields = Payload.parse(UnsafeRawBufferPointer(rebasing: payload.prefix(64))), fields.tag == phase
        else {
            unparsable += 1
            if samples.count < 5 {
                samples.append("unexpected payload '\(String(decoding: payload.prefix(40), as: UTF8.self))'")
            }
            return
        }
        if fields.seq != nextSeq {
            disordered = true
            if fields.seq < nextSeq { stats.duplicates += 1 } else { stats.gaps += fields.seq - nextSeq }
            if samples.count < 5 { samples.append("seq \(fields.seq), expected \(nextSeq)") }
        }
        nextSeq = max(nextSeq, fields.seq + 1)
        stats.record(seq: fields.seq, latency: now - fields.sentMicros, now: now, bytes: payload.count)
    }

    /// Read only after the listener stopped.
    func report(expected: Int) -> PhaseReport {
        var report = PhaseReport(phase: phase, expectedPerSocket: expected)
        report.sockets = 1
        report.frames = stats.frames
        report.bytes = stats.bytes
        report.firstReceive = stats.firstReceive
        report.lastReceive = stats.lastReceive
        report.latency = stats.latency
        report.maxLatencyBySeq = stats.maxLatencyBySeq
        report.duplicates = stats.duplicates
        report.gaps = stats.gaps
        report.unparsable = unparsable
        report.problemSamples = samples
        if !disordered && stats.frames == expected {
            report.complete = 1
        } else if stats.frames < expected {
            report.short = 1
        } else if stats.frames > expected {
            report.excess = 1
        }
        return report
    }
}

/// What the writers' messages look like once the server NOTIFYed them: a JSON envelope
/// `{"event":"WebsocketMessage","channel":C,"payload":"w<id>:s<seq>:t<µs>:x...","claims":{...}}`.
/// Checks every envelope's head and writer sequence, and fully parses every 1,000th.
final class IngestSink: NotificationSink {
    let writers: Int
    private let channelFor: (Int) -> String
    private let window: WriterWindow?
    private var nextSeq: [Int]
    private var counts: [Int]
    private(set) var latency = Histogram()
    private(set) var firstReceive = Int64.max
    private(set) var lastReceive: Int64 = 0
    private(set) var total = 0
    private(set) var envelopeBytes = 0
    private(set) var duplicates = 0
    private(set) var gaps = 0
    private(set) var malformed = 0
    private(set) var samples: [String] = []
    private static let head = Array(#"{"event":"WebsocketMessage","channel":""#.utf8)
    private static let payloadKey = Array(#""payload":""#.utf8)

    init(writers: Int, window: WriterWindow?, channelFor: @escaping (Int) -> String) {
        self.writers = writers
        self.window = window
        self.channelFor = channelFor
        nextSeq = Array(repeating: 0, count: writers)
        counts = Array(repeating: 0, count: writers)
    }

    func received(channel: UnsafePointer<CChar>, payload: UnsafeRawBufferPointer, now: Int64) {
        guard payload.starts(with: Self.head), let keyAt = find(Self.payloadKey, in: payload),
            let fields = Payload.parse(
                UnsafeRawBufferPointer(rebasing: payload[(keyAt + Self.payloadKey.count)...].prefix(64)),
                lead: UInt8(ascii: "w")),
            fields.tag >= 0, fields.tag < writers
        else {
            problem("malformed envelope: \(String(decoding: payload.prefix(120), as: UTF8.self))")
            return
        }
        let writer = fields.tag
        if total % 1000 == 0 && !validates(payload, writer: writer) { return }
        total += 1
        counts[writer] += 1
        window?.delivered(writer, count: counts[writer])
        envelopeBytes += payload.count
        if fields.seq != nextSeq[writer] {
            if fields.seq < nextSeq[writer] { duplicates += 1 } else { gaps += fields.seq - nextSeq[writer] }
            if samples.count < 10 { samples.append("writer \(writer): seq \(fields.seq), expected \(nextSeq[writer])") }
        }
        nextSeq[writer] = max(nextSeq[writer], fields.seq + 1)
        latency.record(now - fields.sentMicros)
        if now < firstReceive { firstReceive = now }
        if now > lastReceive { lastReceive = now }
    }

    /// The full JSON check: event, channel, claims.mode.
    private func validates(_ payload: UnsafeRawBufferPointer, writer: Int) -> Bool {
        guard let envelope = try? JSONParser.parse(Array(payload)),
            envelope["event"]?.stringValue == "WebsocketMessage",
            envelope["channel"]?.stringValue == channelFor(writer),
            envelope["payload"]?.stringValue?.hasPrefix("w\(writer):") == true,
            envelope["claims"]?["mode"]?.stringValue == "w"
        else {
            problem("envelope fails the JSON check: \(String(decoding: payload.prefix(160), as: UTF8.self))")
            return false
        }
        return true
    }

    private func problem(_ text: String) {
        malformed += 1
        if samples.count < 10 { samples.append(text) }
    }

    /// Writers whose messages were exactly 0 ..< expected, in order.
    func completeWriters(expected: Int) -> Int {
        (0..<writers).filter { counts[$0] == expected && nextSeq[$0] == expected }.count
    }

    private func find(_ needle: [UInt8], in haystack: UnsafeRawBufferPointer) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        var index = 0
        let last = haystack.count - needle.count
        while index <= last {
            if haystack[index] == needle[0] {
                var match = true
                for offset in 1..<needle.count where haystack[index + offset] != needle[offset] {
                    match = false
                    break
                }
                if match { return index }
            }
            index += 1
        }
        return nil
    }
}
