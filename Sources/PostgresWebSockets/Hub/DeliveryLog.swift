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
        /// The shard's subscriber list of the channel when the entry arrived (-1: none).
        let listID: Int
        let channel: ChannelKey
        let frame: ByteBuffer
        let arrival: NIODeadline
    }

    let maxBytes: Int
    let maxAge: TimeAmount
    private var entries = CircularBuffer<Entry>(initialCapacity: 1024)
    private(set) var bytes = 0
    /// The sequence the next entry will have.
    private(set) var next: UInt64 = 0

    init(maxBytes: Int, maxAge: TimeAmount) {
        self.maxBytes = maxBytes
        self.maxAge = maxAge
    }

    /// The oldest sequence still held (`next` when empty).
    var first: UInt64 { entries.first?.sequence ?? next }

    var count: Int { entries.count }

    /// Appends an entry; sequences arrive in order, each once.
    mutating func append(_ entry: Entry) {
        precondition(entries.isEmpty || entry.sequence == next, "log sequences must be contiguous")
        if entries.isEmpty { next = entry.sequence }
        entries.append(entry)
        bytes += entry.frame.readableBytes
        next = entry.sequence &+ 1
    }

    /// Drops entries past the window. True when `first` moved.
    mutating func trim(now: NIODeadline) -> Bool {
        var dropped = false
        while let oldest = entries.first, bytes > maxBytes || now - oldest.arrival > maxAge {
            bytes -= oldest.frame.readableBytes
            entries.removeFirst()
            dropped = true
        }
        return dropped
    }

    /// The entries from `sequence` on (empty when it is `next`); nil when `sequence` is
    /// no longer held or not yet written.
    func entries(from sequence: UInt64) -> CircularBuffer<Entry>.SubSequence? {
        guard sequence >= first, sequence <= next else { return nil }
        let start = entries.index(entries.startIndex, offsetBy: Int(sequence - first))
        return entries[start...]
    }
}
