import Logging
import NIOCore

/// An open socket (WebSocket or event stream), as its event loop's shard sees it. Every call
/// comes on that loop.
protocol ShardMember: AnyObject {
    /// How it wants notifications framed.
    var encoding: FrameEncoding { get }
    /// Its logger (with its `socket_id`): the shard logs its falling behind and catching up.
    var logger: SocketLog { get }
    /// Its token's claims as envelopes carry them (`Envelope.claimsPrefix`), which revocation
    /// filters are matched against.
    var claimsPrefix: [UInt8] { get }
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
    /// `pgws.disconnect` or `pgws.revoke` matched its claims: close with 3003.
    func revoke(_ reason: CloseReason)
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
    /// Per durable list (`pgws.v1`, SSE): the offset of the last message written or already
    /// known to the client. A message at or below it is not written again, from the log or
    /// live, so a resume or a catch-up from the table never repeats one.
    var cursors: [ObjectIdentifier: UInt64] = [:]
    /// Per durable list being read from the table instead of the log.
    var tableReads: [ObjectIdentifier: TableRead] = [:]

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
        cursors[ObjectIdentifier(list)] = nil
        tableReads[ObjectIdentifier(list)] = nil
    }

    /// Whether the log entry, of `list`, is one this member still needs.
    func wants(_ list: SubscriberList?, _ entry: DeliveryLog.Entry) -> Bool {
        guard let list, reads(list), entry.sequence >= floors[ObjectIdentifier(list), default: 0] else { return false }
        return takes(entry.kind, of: list)
    }

    /// Whether a notification of this kind of `list` is for this member, position aside.
    @inline(__always)
    func takes(_ kind: Notification.Kind, of list: SubscriberList) -> Bool {
        switch kind {
        case .plain:
            // A durable channel's structured readers get its stored messages only.
            return encoding == .raw || !list.isDurable
        case .durable(let offset):
            guard encoding != .raw else { return true }
            let key = ObjectIdentifier(list)
            return tableReads[key] == nil && offset > cursors[key, default: 0]
        case .durability:
            return false
        }
    }

    /// A durable message of `list` was written.
    @inline(__always)
    func wrote(_ kind: Notification.Kind, of list: SubscriberList) {
        if encoding != .raw, case .durable(let offset) = kind { cursors[ObjectIdentifier(list)] = offset }
    }
}

/// A durable list that a member reads from the table: after a resume from further back than
/// the log reaches, or after it fell out of the log's window. Pages are asked one at a time;
/// the rows of the last one wait here while the socket cannot take them.
final class TableRead {
    /// The page asked for and not yet answered.
    var waitingForPage = false
    /// The next page starts after this offset.
    var nextAfter: UInt64
    /// Rows not yet written.
    var pending = CircularBuffer<(offset: UInt64, payload: ByteBuffer)>()
    /// The last page answered held everything the table had.
    var caughtUp = false
    /// Whether the resume got every message after `since` (set by the first page).
    var recovered: Bool? = nil
    let since: UInt64
    /// Written before the first replayed frame (SSE's gap event), given `recovered`.
    let preface: ((Bool) -> ByteBuffer?)?
    /// Written after the last replayed frame, before any live one (`subscribed`).
    let reply: ((String?, Bool) -> ByteBuffer)?

    init(since: UInt64, preface: ((Bool) -> ByteBuffer?)?, reply: ((String?, Bool) -> ByteBuffer)?) {
        self.since = since
        self.nextAfter = since
        self.preface = preface
        self.reply = reply
    }
}
