import Logging
import NIOCore

/// An open socket (WebSocket or event stream), as its event loop's shard sees it. Every call
/// comes on that loop.
protocol ShardMember: AnyObject {
    /// How it wants notifications framed.
    var encoding: FrameEncoding { get }
    /// Its logger (with its `socket_id`): the shard logs its falling behind and catching up.
    var logger: Logger { get }
    /// Writes a notification frame (without flushing) if the socket can take it now. False
    /// when it cannot (its queue in the server is at its watermark): the shard then keeps
    /// its position in the log and replays from there once it can.
    func deliver(_ frame: ByteBuffer) -> Bool
    /// Writes a reply the shard held back until the frames before it were written, whatever
    /// the socket's queue (replies are small and few).
    func deliverReply(_ frame: ByteBuffer)
    /// Flushes what `deliver` wrote since the last flush.
    func flushIfNeeded()
    /// Its position fell out of the log's window: close it (1008 client too slow).
    func cutOff()
    /// The shard's timer, about once a second: pings, token expiry, close deadlines.
    func tick(now: NIODeadline, wallClock: Double)
    /// The queue to PostgreSQL drained, or the database went down: a writer paused for
    /// congestion may read again.
    func resumeIfPaused()
    /// Graceful shutdown: close with 1001.
    func shutDown()
    /// The shutdown's grace period is over: drop the connection.
    func abort()
}

/// The shard's view of one member: the channels it reads and where it is in the log. The
/// shard is the only owner of that position.
final class MemberRecord {
    enum Position: Equatable {
        /// Takes frames as they arrive.
        case live
        /// Could not take the frame with this sequence; replays from it when it can.
        case lagging(from: UInt64)
        /// Fell out of the window: gets nothing more.
        case cut
    }

    let member: any ShardMember
    let encoding: FrameEncoding
    private(set) var lists: [SubscriberList] = []
    var position = Position.live
    /// Per list: entries before this sequence were already written (or are not wanted). Set
    /// when a subscription replays from an earlier point than the member's position, so the
    /// replay repeats nothing of its other channels; cleared once the member is live.
    var floors: [ObjectIdentifier: UInt64] = [:]
    /// Replies to write once the replay has passed `boundary`: a `subscribed` goes after the
    /// frames it replayed and before any live frame of its channel.
    var replies: [(boundary: UInt64, frame: ByteBuffer)] = []

    init(member: any ShardMember) {
        self.member = member
        self.encoding = member.encoding
    }

    func reads(_ list: SubscriberList) -> Bool {
        lists.contains { $0 === list }
    }

    func add(_ list: SubscriberList) {
        if !reads(list) { lists.append(list) }
    }

    func remove(_ list: SubscriberList) {
        lists.removeAll { $0 === list }
        floors[ObjectIdentifier(list)] = nil
    }

    /// Whether the entry of `list` with `sequence` is one this member still needs.
    func wants(_ list: SubscriberList?, _ sequence: UInt64) -> Bool {
        guard let list, reads(list) else { return false }
        return sequence >= floors[ObjectIdentifier(list), default: 0]
    }
}
