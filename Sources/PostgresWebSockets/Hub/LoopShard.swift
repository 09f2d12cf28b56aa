import Logging
import NIOCore

/// Counts of what the delivery logs did (exported as metrics later).
public struct DeliveryCounters: Equatable, Sendable {
    /// Sockets that could not take a frame and went on from the log instead.
    public var fellBehind = 0
    /// Sockets that replayed to the end of the log and take frames directly again.
    public var caughtUp = 0
    /// Frames written from the log.
    public var replayed = 0
    /// Sockets closed because their position fell out of the window.
    public var cutOff = 0

    mutating func add(_ other: DeliveryCounters) {
        fellBehind += other.fellBehind
        caughtUp += other.caughtUp
        replayed += other.replayed
        cutOff += other.cutOff
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
    private var channels: [ChannelKey: SubscriberList] = [:]
    private var members: [ObjectIdentifier: MemberRecord] = [:]
    private var nextListID = 0
    private var log: DeliveryLog
    /// The members whose position is `.lagging`: the ones a trim may cut off.
    private var lagging: [ObjectIdentifier: MemberRecord] = [:]
    /// No lagging member is behind this sequence (a lower bound, refreshed when crossed).
    private var oldestLag: UInt64 = .max
    private(set) var counters = DeliveryCounters()
    private var pass = 0
    private var sweeper: RepeatedTask? = nil

    init(eventLoop: any EventLoop, registry: ListenRegistry, window: (bytes: Int, age: TimeAmount)) {
        self.eventLoop = eventLoop
        self.registry = registry
        self.log = DeliveryLog(maxBytes: window.bytes, maxAge: window.age)
    }

    var memberCount: Int { members.count }
    var logBytes: Int { log.bytes }

    // MARK: - Holding channels (handshakes) and reading them (open sockets)

    /// Holds `channels` for a handshake: calls `ready` (from any thread) once PostgreSQL
    /// LISTENs on all of them, or at once while the database is down.
    func hold(_ keys: [ChannelKey], ready: @escaping @Sendable () -> Void) {
        var firstHere: [ChannelKey] = []
        for key in keys {
            let list: SubscriberList
            if let existing = channels[key] {
                list = existing
            } else {
                list = SubscriberList(id: nextListID)
                nextListID += 1
                channels[key] = list
                firstHere.append(key)
            }
            list.holders += 1
        }
        registry.acquire(firstHere, awaiting: keys, ready: ready)
    }

    /// Gives back what `hold` took.
    func release(_ keys: [ChannelKey]) {
        var lastHere: [ChannelKey] = []
        for key in keys {
            guard let list = channels[key] else { continue }
            list.holders -= 1
            if list.holders == 0 {
                channels[key] = nil
                lastHere.append(key)
            }
        }
        if !lastHere.isEmpty { registry.release(lastHere) }
    }

    /// An open socket starts reading its held channels, from the next notification on.
    func add(_ member: any ShardMember) {
        let lists = member.readChannels.compactMap { channels[$0] }
        let record = MemberRecord(member: member, listIDs: lists.map(\.id))
        members[ObjectIdentifier(member)] = record
        for list in lists { list.append(record) }
    }

    func remove(_ member: any ShardMember) {
        guard let record = members.removeValue(forKey: ObjectIdentifier(member)) else { return }
        lagging[ObjectIdentifier(member)] = nil
        for key in member.readChannels {
            channels[key]?.remove(record)
        }
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
                let list = channels[notification.channel]
                log.append(
                    DeliveryLog.Entry(
                        sequence: notification.sequence, listID: list?.id ?? -1, channel: notification.channel,
                        frame: notification.frame, arrival: now))
                if let list, !list.records.isEmpty {
                    if list.lastPass != pass {
                        list.lastPass = pass
                        touched.append(list)
                    }
                    for record in list.records where record.position == .live {
                        if !record.member.deliver(notification.frame) {
                            fellBehind(record, at: notification.sequence)
                        }
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
        record.position = .lagging(from: sequence)
        lagging[ObjectIdentifier(record.member)] = record
        oldestLag = min(oldestLag, sequence)
        counters.fellBehind += 1
        record.member.logger.log(.debug, "socket fell behind, goes on from the log", [.sequence: "\(sequence)"])
    }

    /// A lagging member can take frames again: it replays the log from its position, in
    /// order, until it cannot take more or has everything, and then takes frames directly.
    func canWrite(_ member: any ShardMember) {
        guard let record = members[ObjectIdentifier(member)], case .lagging(let from) = record.position else { return }
        guard let entries = log.entries(from: from) else {
            cut(record)
            return
        }
        var next = from
        var caughtUp = true
        for entry in entries {
            next = entry.sequence
            guard record.listIDs.contains(entry.listID) else { continue }
            guard member.deliver(entry.frame) else {
                caughtUp = false
                break
            }
            counters.replayed += 1
        }
        if caughtUp {
            record.position = .live
            lagging[ObjectIdentifier(member)] = nil
            counters.caughtUp += 1
            member.logger.log(.debug, "socket caught up from the log", [.sequence: "\(log.next)"])
        } else {
            record.position = .lagging(from: next)
        }
        member.flushIfNeeded()
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
        record.position = .cut
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
