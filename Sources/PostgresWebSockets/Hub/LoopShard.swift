import Logging
import NIOCore
import Synchronization

/// Counts of what a loop's shard did, in plain integers only its loop touches; `/metrics`
/// sums them over the loops when it is scraped.
public struct DeliveryCounters: Equatable, Sendable {
    /// Frames written to sockets (live and replayed), and their bytes.
    public var delivered = 0
    public var bytesOut = 0
    /// From a notification's arrival at the hub to the pass of its loop that writes it, once
    /// per loop that has readers of it.
    public var latency = LatencyHistogram()
    /// Sockets that could not take a frame and went on from the log instead.
    public var fellBehind = 0
    /// Sockets that replayed to the end of the log and take frames directly again.
    public var caughtUp = 0
    /// Frames written from the log.
    public var replayed = 0
    /// Sockets closed because their position fell out of the window.
    public var cutOff = 0
    /// Sockets that fell out of the window and went on from a durable channel's table.
    public var fromTable = 0

    mutating func add(_ other: DeliveryCounters) {
        delivered += other.delivered
        bytesOut += other.bytesOut
        latency.add(other.latency)
        fellBehind += other.fellBehind
        caughtUp += other.caughtUp
        replayed += other.replayed
        cutOff += other.cutOff
        fromTable += other.fromTable
    }
}

/// Everything one event loop knows about its sockets: which channels they hold and read,
/// the log of recent notifications and where each socket is in it, and the timer that pings
/// idle sockets and closes expired ones. Only ever touched on its loop, so the broadcast
/// path takes no lock. It is the one owner of "who reads what" and "who is how far" on its
/// loop; the listener only learns when a channel's first holder here arrives and its last
/// one leaves.
final class LoopShard {
    let eventLoop: any EventLoop
    private let registry: ListenRegistry
    /// Where durable channels' messages are read from when the log does not reach back far
    /// enough; nil when durable channels are off.
    let store: (any DurableReading)?
    /// With presence on: where this loop's sockets are reported as they read channels.
    let presence: PresenceBook?
    /// Per channel, the members that get its joins and leaves (`pgws.v1`, `presence: true`).
    private var presenceWatchers: [ChannelKey: Set<ObjectIdentifier>] = [:]
    var channels: [ChannelKey: SubscriberList] = [:]
    var members: [ObjectIdentifier: MemberRecord] = [:]
    var log: DeliveryLog
    /// The durable channels, with the newest offset this loop has seen of each.
    var durable: [ChannelKey: UInt64] = [:]
    /// The members whose position is `.lagging`: the ones a trim may cut off.
    private var lagging: [ObjectIdentifier: MemberRecord] = [:]
    /// No lagging member is behind this sequence (a lower bound, refreshed when crossed).
    private var oldestLag: UInt64 = .max
    var counters = DeliveryCounters()
    private var pass = 0
    private var sweeper: RepeatedTask? = nil

    init(
        eventLoop: any EventLoop, registry: ListenRegistry, window: (bytes: Int, age: TimeAmount),
        offsets: OffsetSpace = OffsetSpace(), store: (any DurableReading)? = nil, presence: PresenceBook? = nil
    ) {
        self.eventLoop = eventLoop
        self.presence = presence
        self.registry = registry
        self.store = store
        self.log = DeliveryLog(maxBytes: window.bytes, maxAge: window.age, offsets: offsets)
    }

    var memberCount: Int { members.count }
    var offsets: OffsetSpace { log.offsets }

    // MARK: - Holding channels (handshakes, subscriptions)

    /// Holds `channels` for a handshake or a subscription: calls `ready` (from any thread)
    /// once PostgreSQL LISTENs on all of them, or at once while the database is down.
    func hold(_ keys: [ChannelKey], ready: @escaping @Sendable () -> Void) {
        var firstHere: [ChannelKey] = []
        for key in keys {
            let list: SubscriberList
            if let existing = channels[key] {
                list = existing
                list.lingering?.cancel()
                list.lingering = nil
            } else {
                list = SubscriberList(channel: key)
                list.isDurable = durable[key] != nil
                channels[key] = list
                firstHere.append(key)
            }
            list.holders += 1
        }
        registry.acquire(firstHere, awaiting: keys, ready: ready)
    }

    /// Gives back what `hold` took. A channel nobody holds any more stays LISTENed, with its
    /// log, for the window's age (`max-lag-seconds`), so that a client that reconnects within
    /// that time resumes; then the listener may UNLISTEN it.
    func release(_ keys: [ChannelKey]) {
        for key in keys {
            guard let list = channels[key] else { continue }
            list.holders -= 1
            guard list.holders == 0 else { continue }
            let bound = NIOLoopBound((self, list), eventLoop: eventLoop)
            list.lingering = eventLoop.scheduleTask(in: log.maxAge) {
                let (shard, list) = bound.value
                shard.lingered(list)
            }
        }
    }

    private func lingered(_ list: SubscriberList) {
        guard list.holders == 0, channels[list.channel] === list else { return }
        channels[list.channel] = nil
        registry.release([list.channel])
    }

    // MARK: - Members and what they read

    /// An open socket joins the loop; it reads what it subscribes to.
    func add(_ member: any ShardMember) {
        members[ObjectIdentifier(member)] = MemberRecord(member: member)
    }

    func remove(_ member: any ShardMember) {
        guard let record = members.removeValue(forKey: ObjectIdentifier(member)) else { return }
        lagging[ObjectIdentifier(member)] = nil
        for list in record.lists {
            list.remove(record)
            presence?.left(socket: member.logger.socketID, channel: list.channel.name)
            unwatchPresence(ObjectIdentifier(member), of: list.channel)
        }
    }

    /// The one place a member starts reading a list: presence counts it from here.
    func startReading(_ record: MemberRecord, _ list: SubscriberList) {
        guard !record.reads(list) else { return }
        record.add(list)
        list.append(record)
        presence?.joined(
            socket: record.member.logger.socketID, channel: list.channel.name, claimsPrefix: record.member.claimsPrefix)
    }

    // MARK: - Presence

    /// Whether `member`, which reads `key`, gets the channel's joins and leaves.
    func watchPresence(_ member: any ShardMember, of key: ChannelKey, _ watching: Bool) {
        let id = ObjectIdentifier(member)
        guard watching else { return unwatchPresence(id, of: key) }
        // Only a member reading the channel: its removal unwatches exactly the lists it reads.
        guard let presence, let record = members[id], let list = channels[key], record.reads(list),
            presenceWatchers[key, default: []].insert(id).inserted
        else { return }
        presence.watchers.add(1, ordering: .relaxed)
    }

    private func unwatchPresence(_ id: ObjectIdentifier, of key: ChannelKey) {
        guard presenceWatchers[key]?.remove(id) != nil else { return }
        if presenceWatchers[key]?.isEmpty == true { presenceWatchers[key] = nil }
        presence?.watchers.subtract(1, ordering: .relaxed)
    }

    /// A join or leave on `key`, from any server: to its watchers, after what they wait for.
    func presenceChanged(_ key: ChannelKey, frame: ByteBuffer) {
        for id in presenceWatchers[key] ?? [] {
            guard let record = members[id] else { continue }
            send(frame, to: record)
        }
    }

    /// `member` reads the held channel `key` from now on, after what it missed since `since`
    /// (an offset it got earlier) if given. `preface`, given whether everything after `since`
    /// can be sent, makes a frame written before the replayed ones (SSE's gap event); `reply`,
    /// given the offset of the channel's last message before live delivery starts and that
    /// same answer, makes the frame written after them and before any live one.
    func subscribe(
        _ member: any ShardMember, to key: ChannelKey, since: Substring? = nil,
        preface: ((_ recovered: Bool) -> ByteBuffer?)? = nil,
        reply: ((_ last: String?, _ recovered: Bool) -> ByteBuffer)? = nil
    ) {
        guard let record = members[ObjectIdentifier(member)], let list = channels[key] else { return }
        guard record.position != .cut else { return }
        if list.isDurable, record.encoding != .raw {
            return subscribeDurable(record, to: list, since: since, preface: preface, reply: reply)
        }
        let sequence = since.flatMap { log.offsets.sequence(of: $0) }
        let boundary = log.next
        var recovered = false
        var replayFrom: UInt64? = nil
        if let sequence, sequence < boundary {
            recovered = canReplay(sequence, of: key)
            let start = max(sequence &+ 1, log.first)
            if start < boundary { replayFrom = start }
        }
        if since != nil, let frame = preface?(recovered) { record.member.deliverReply(frame) }
        let last = (list.lastSequence ?? lastSequence(of: key)).map { sequence in
            log.entry(sequence).map { log.offset(of: $0) } ?? log.offsets.offset(sequence)
        }
        let replyFrame = reply?(last, recovered)
        startReading(record, list)
        replay(record, list, from: replayFrom, boundary: boundary, then: replyFrame)
    }

    /// Puts `record`, which just started reading `list`, on the log from `from` for that
    /// list (nil: nothing to replay), its other lists going on where they were; `replyFrame`
    /// goes out once the log up to `boundary` is written.
    func replay(
        _ record: MemberRecord, _ list: SubscriberList, from: UInt64?, boundary: UInt64, then replyFrame: ByteBuffer?
    ) {
        switch record.position {
        case .cut:
            return
        case .live:
            if let from, from < boundary {
                for other in record.lists where other !== list { record.floors[ObjectIdentifier(other)] = boundary }
                record.floors[ObjectIdentifier(list)] = from
                if let replyFrame { record.replies.append((boundary, replyFrame)) }
                startLagging(record, from: from)
                canWrite(record.member)
            } else if let replyFrame {
                send(replyFrame, to: record)
            }
        case .lagging(let position):
            if let from, from < position {
                for other in record.lists where other !== list {
                    record.floors[ObjectIdentifier(other)] = max(record.floors[ObjectIdentifier(other)] ?? 0, position)
                }
                startLagging(record, from: from)
            }
            record.floors[ObjectIdentifier(list)] = from ?? boundary
            if let replyFrame { record.replies.append((boundary, replyFrame)) }
        }
    }

    /// Whether the log holds every notification of `key` after `since` (one of this
    /// process's sequences): none left the window, and PostgreSQL LISTENed on the channel
    /// without a break since then (a lost listener connection, or a channel UNLISTENed once
    /// nobody held it, loses what was committed meanwhile).
    func canReplay(_ since: UInt64?, of key: ChannelKey) -> Bool {
        guard let since, since < log.next, since &+ 1 >= log.first else { return false }
        guard let listened = registry.listenedSince(key) else { return false }
        return since >= listened
    }

    /// `member` stops reading `key` (its hold is given back separately).
    func unsubscribe(_ member: any ShardMember, from key: ChannelKey) {
        guard let record = members[ObjectIdentifier(member)], let list = channels[key] else { return }
        unwatchPresence(ObjectIdentifier(member), of: key)
        guard record.reads(list) else { return }
        record.remove(list)
        list.remove(record)
        presence?.left(socket: member.logger.socketID, channel: key.name)
    }

    /// A reply to `member`, written after whatever the shard still holds back for it.
    func send(_ frame: ByteBuffer, to member: any ShardMember) {
        guard let record = members[ObjectIdentifier(member)] else { return }
        send(frame, to: record)
    }

    func send(_ frame: ByteBuffer, to record: MemberRecord) {
        if record.replies.isEmpty {
            record.member.deliverReply(frame)
            record.member.flushIfNeeded()
        } else {
            record.replies.append((log.next, frame))
        }
    }

    /// The sequence of `key`'s latest notification the log holds, for a channel this loop
    /// had no list of when it arrived.
    private func lastSequence(of key: ChannelKey) -> UInt64? {
        var sequence = log.next
        while sequence > log.first {
            sequence -= 1
            guard let entry = log.entry(sequence), entry.channel == key else { continue }
            if case .durability = entry.kind { continue }
            return sequence
        }
        return nil
    }

    // MARK: - Fan-out

    /// Notifications per flush: enough to make the flush syscall cheap per delivery, few
    /// enough that the first sockets get their frames while the rest are being written.
    /// 512/4096 delivered a 5,000-socket burst fastest and with the lowest median latency of
    /// the settings measured (64/1024, 256/2048, 512/4096, 1024/8192, unbounded).
    static let notificationsPerFlush = 512
    /// Notifications per event-loop task, so a burst does not hold off reads and timers.
    static let notificationsPerTask = 4096

    /// Batches taken from the inbox and not yet written, with how far the first one got.
    private var backlog: [ShardInbox.Entry] = []
    private var backlogPosition = 0

    /// Logs what the inbox holds and writes it to the sockets that can take it now: each
    /// notification to every live socket of its channel, flushing each touched socket once
    /// per `notificationsPerFlush`. A socket that cannot take a frame keeps its position.
    func drain(_ inbox: ShardInbox) {
        backlog.append(contentsOf: inbox.takeAll())
        var budget = Self.notificationsPerTask
        var touched: [SubscriberList] = []
        var unflushed = 0
        let now = NIODeadline.now()
        pass &+= 1
        while budget > 0, let entry = backlog.first {
            let batch = entry.batch
            while backlogPosition < batch.count, budget > 0 {
                let notification = batch[backlogPosition]
                backlogPosition += 1
                budget -= 1
                log.append(
                    DeliveryLog.Entry(
                        sequence: notification.sequence, channel: notification.channel, frame: notification.frame,
                        arrival: now, kind: notification.kind))
                switch notification.kind {
                case .plain:
                    break
                case .durable(let offset):
                    durable[notification.channel] = offset
                case .durability(let isDurable, let last):
                    durabilityChanged(notification.channel, isDurable: isDurable, last: last)
                    continue
                }
                if let list = channels[notification.channel] {
                    list.lastSequence = notification.sequence
                    if !list.records.isEmpty {
                        if list.lastPass != pass {
                            list.lastPass = pass
                            touched.append(list)
                        }
                        deliver(notification, to: list)
                        counters.latency.record(now - entry.receivedAt)
                    }
                }
                if log.bytes > log.maxBytes { trim(now: now) }
                unflushed += 1
                if unflushed == Self.notificationsPerFlush {
                    flush(&touched)
                    unflushed = 0
                }
            }
            if backlogPosition == batch.count {
                backlog.removeFirst()
                backlogPosition = 0
                entry.completion.shardFinished()
            }
        }
        flush(&touched)
        if !backlog.isEmpty {
            let shard = NIOLoopBound(self, eventLoop: eventLoop)
            eventLoop.execute { shard.value.drain(inbox) }
        }
    }

    private func deliver(_ notification: Notification, to list: SubscriberList) {
        guard list.encodedReaders > 0 else {
            // Raw readers only: the hot path, one frame for all, durable or not.
            var written = 0
            for record in list.records where record.position == .live {
                if record.member.deliver(notification.frame) {
                    written += 1
                } else {
                    fellBehind(record, at: notification.sequence)
                }
            }
            counters.delivered += written
            counters.bytesOut += written * notification.frame.readableBytes
            return
        }
        for record in list.records where record.position == .live {
            guard record.takes(notification.kind, of: list) else { continue }
            let frame = log.frame(notification.sequence, record.encoding)
            if record.member.deliver(frame) {
                record.wrote(notification.kind, of: list)
                counters.delivered += 1
                counters.bytesOut += frame.readableBytes
            } else {
                fellBehind(record, at: notification.sequence)
            }
        }
    }

    private func flush(_ touched: inout [SubscriberList]) {
        for list in touched {
            for record in list.records {
                record.member.flushIfNeeded()
            }
        }
        touched.removeAll(keepingCapacity: true)
        pass &+= 1
    }

    // MARK: - Lagging sockets

    private func fellBehind(_ record: MemberRecord, at sequence: UInt64) {
        startLagging(record, from: sequence)
        counters.fellBehind += 1
        record.member.logger.log(.debug, "socket fell behind, goes on from the log", [.sequence: "\(sequence)"])
    }

    func startLagging(_ record: MemberRecord, from sequence: UInt64) {
        record.position = .lagging(from: sequence)
        lagging[ObjectIdentifier(record.member)] = record
        oldestLag = min(oldestLag, sequence)
    }

    /// A lagging member can take frames again: it replays the log from its position, in
    /// order, until it cannot take more or has everything, and then takes frames directly.
    /// Replies held back for it go out where they belong in that order.
    func canWrite(_ member: any ShardMember) {
        guard let record = members[ObjectIdentifier(member)] else { return }
        if !record.tableReads.isEmpty { writeTableReads(of: record) }
        guard case .lagging(let from) = record.position else { return }
        guard from >= log.first else {
            cut(record)
            return
        }
        var sequence = from
        while sequence < log.next {
            writeReplies(of: record, upTo: sequence)
            if let entry = log.entry(sequence), let list = channels[entry.channel], record.wants(list, entry) {
                let frame = log.frame(sequence, record.encoding)
                guard member.deliver(frame) else {
                    record.position = .lagging(from: sequence)
                    member.flushIfNeeded()
                    return
                }
                record.wrote(entry.kind, of: list)
                counters.replayed += 1
                counters.delivered += 1
                counters.bytesOut += frame.readableBytes
            }
            sequence += 1
        }
        writeReplies(of: record, upTo: .max)
        record.position = .live
        record.floors = [:]
        lagging[ObjectIdentifier(member)] = nil
        counters.caughtUp += 1
        member.logger.log(.debug, "socket caught up from the log", [.sequence: "\(log.next)"])
        member.flushIfNeeded()
    }

    /// Writes the held-back replies whose place is before the entry `sequence`.
    func writeReplies(of record: MemberRecord, upTo sequence: UInt64) {
        while let reply = record.replies.first, reply.boundary <= sequence {
            record.member.deliverReply(reply.frame)
            record.replies.removeFirst()
        }
    }

    /// Drops what left the window and cuts off the members whose position it took.
    private func trim(now: NIODeadline) {
        guard log.trim(now: now), log.first > oldestLag else { return }
        var oldest = UInt64.max
        for record in Array(lagging.values) {
            guard case .lagging(let from) = record.position else { continue }
            if from < log.first {
                cut(record)
            } else {
                oldest = min(oldest, from)
            }
        }
        oldestLag = oldest
    }

    private func cut(_ record: MemberRecord) {
        if catchUpFromTable(record) {
            lagging[ObjectIdentifier(record.member)] = nil
            return
        }
        record.position = .cut
        record.replies = []
        lagging[ObjectIdentifier(record.member)] = nil
        counters.cutOff += 1
        record.member.cutOff()
    }

    // MARK: - Every socket of the loop

    func startSweeping(every interval: TimeAmount) {
        let shard = NIOLoopBound(self, eventLoop: eventLoop)
        sweeper = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            shard.value.sweep()
        }
    }

    func stopSweeping() {
        sweeper?.cancel()
        sweeper = nil
    }

    private func sweep() {
        let now = NIODeadline.now()
        trim(now: now)
        let wallClock = WallClock.seconds()
        for record in Array(members.values) {
            record.member.tick(now: now, wallClock: wallClock)
        }
    }

    func resumePausedWriters() {
        for record in Array(members.values) {
            record.member.resumeIfPaused()
        }
    }

    /// Closes the members whose claims contain `filter` (`pgws.disconnect`, `pgws.revoke`).
    func disconnect(matching filter: JSONValue, reason: CloseReason) {
        for record in Array(members.values) {
            guard let claims = try? JSONParser.parse(Envelope.claims(fromPrefix: record.member.claimsPrefix)),
                claims.contains(filter)
            else { continue }
            record.member.revoke(reason)
        }
    }

    func shutDownAll() {
        for record in Array(members.values) {
            record.member.shutDown()
        }
    }

    func abortAll() {
        for record in Array(members.values) {
            record.member.abort()
        }
    }
}
