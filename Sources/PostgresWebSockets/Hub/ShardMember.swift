import Logging
import NIOCore

/// An open socket, as its event loop's shard sees it. Every call comes on that loop.
protocol ShardMember: AnyObject {
    /// The channels it reads, each held on the shard since its handshake.
    var readChannels: [ChannelKey] { get }
    /// Its logger (with its `socket_id`): the shard logs its falling behind and catching up.
    var logger: Logger { get }
    /// Writes a broadcast frame (without flushing) if the socket can take it now. False
    /// when it cannot (its queue in the server is at its watermark): the shard then keeps
    /// its position in the log and replays from there once it can.
    func deliver(_ frame: ByteBuffer) -> Bool
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

/// The shard's view of one member: which of its lists it reads, and where it is in the
/// log. The shard is the only owner of that position.
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
    let listIDs: [Int]
    var position = Position.live

    init(member: any ShardMember, listIDs: [Int]) {
        self.member = member
        self.listIDs = listIDs
    }
}
