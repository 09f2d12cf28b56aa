import NIOCore

/// The recent notifications of one event loop, in commit order, each under its sequence
/// number: one copy of every frame, however many sockets still need it.
///
/// One log per event loop rather than per channel: a socket that reads several channels
/// keeps one position and replays them in PostgreSQL's commit order across channels, and
/// the loop appends without a lock. Every loop logs every notification (the frames
/// themselves are shared between loops), so a position means the same on every loop.
///
/// The window is what the log keeps: at most `maxBytes` of frames, none older than
/// `maxAge`. A socket whose position falls out of it is cut off.
struct DeliveryLog {
    struct Entry {
        let sequence: UInt64
        let channel: ChannelKey
        /// The raw text frame; the other encodings are made on first need.
        let frame: ByteBuffer
        let arrival: NIODeadline
        let kind: Notification.Kind
        fileprivate var v1: ByteBuffer? = nil
        fileprivate var sse: ByteBuffer? = nil

        init(
            sequence: UInt64, channel: ChannelKey, frame: ByteBuffer, arrival: NIODeadline,
            kind: Notification.Kind = .plain
        ) {
            self.sequence = sequence
            self.channel = channel
            self.frame = frame
            self.arrival = arrival
            self.kind = kind
        }

        /// A durable message's offset on its channel.
        var durableOffset: UInt64? {
            if case .durable(let offset) = kind { return offset }
            return nil
        }
    }

    let maxBytes: Int
    let maxAge: TimeAmount
    let offsets: OffsetSpace
    private var entries = CircularBuffer<Entry>(initialCapacity: 1024)
    private(set) var bytes = 0
    /// The sequence the next entry will have.
    private(set) var next: UInt64 = 0

    init(maxBytes: Int, maxAge: TimeAmount, offsets: OffsetSpace = OffsetSpace()) {
        self.maxBytes = maxBytes
        self.maxAge = maxAge
        self.offsets = offsets
    }

    /// The oldest sequence still held (`next` when empty).
    var first: UInt64 { entries.first?.sequence ?? next }

    var count: Int { entries.count }

    /// Appends an entry; sequences arrive in order, each once.
    mutating func append(_ entry: Entry) {
        precondition(entries.isEmpty || entry.sequence == next, "log sequences must be contiguous")
        entries.append(entry)
        bytes += entry.frame.readableBytes
        next = entry.sequence &+ 1
    }

    /// Drops entries past the window. True when `first` moved.
    mutating func trim(now: NIODeadline) -> Bool {
        var dropped = false
        while let oldest = entries.first, bytes > maxBytes || now - oldest.arrival > maxAge {
            bytes -= oldest.frame.readableBytes + (oldest.v1?.readableBytes ?? 0) + (oldest.sse?.readableBytes ?? 0)
            entries.removeFirst()
            dropped = true
        }
        return dropped
    }

    /// The entry with `sequence`, if held.
    func entry(_ sequence: UInt64) -> Entry? {
        guard sequence >= first, sequence < next else { return nil }
        return entries[entries.index(entries.startIndex, offsetBy: Int(sequence - first))]
    }

    /// The entries from `sequence` on (empty when it is `next`); nil when `sequence` is
    /// no longer held or not yet written.
    func entries(from sequence: UInt64) -> CircularBuffer<Entry>.SubSequence? {
        guard sequence >= first, sequence <= next else { return nil }
        let start = entries.index(entries.startIndex, offsetBy: Int(sequence - first))
        return entries[start...]
    }

    /// The held entry's frame in `encoding`, made and kept on first need.
    mutating func frame(_ sequence: UInt64, _ encoding: FrameEncoding) -> ByteBuffer {
        let index = entries.index(entries.startIndex, offsetBy: Int(sequence - first))
        switch encoding {
        case .raw:
            return entries[index].frame
        case .v1:
            if let made = entries[index].v1 { return made }
            let entry = entries[index]
            let made = MessageFrames.v1Message(
                channel: entry.channel.name, offset: offset(of: entry),
                payload: MessageFrames.payload(ofRawFrame: entry.frame))
            entries[index].v1 = made
            bytes += made.readableBytes
            return made
        case .sse:
            if let made = entries[index].sse { return made }
            let made = MessageFrames.sseEvent(
                offset: offset(of: entries[index]), payload: MessageFrames.payload(ofRawFrame: entries[index].frame))
            entries[index].sse = made
            bytes += made.readableBytes
            return made
        }
    }

    /// The offset clients see: a durable message's number, else this process's sequence.
    func offset(of entry: Entry) -> String {
        entry.durableOffset.map { "\($0)" } ?? offsets.offset(entry.sequence)
    }
}
