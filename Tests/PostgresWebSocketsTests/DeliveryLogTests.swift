import Logging
import NIOCore
import NIOEmbedded
import Synchronization
import Testing

@testable import PostgresWebSockets

private let start = NIODeadline.uptimeNanoseconds(5_000_000_000)

private func entry(_ sequence: UInt64, bytes: Int = 100, at time: NIODeadline = start) -> DeliveryLog.Entry {
    DeliveryLog.Entry(
        sequence: sequence, channel: ChannelKey("c"), frame: ByteBuffer(repeating: 0, count: bytes), arrival: time)
}

@Suite("DeliveryLog")
struct DeliveryLogTests {
    @Test("the window keeps at most maxBytes and nothing older than maxAge")
    func window() {
        var log = DeliveryLog(maxBytes: 350, maxAge: .seconds(30))
        for sequence in 0..<5 { log.append(entry(UInt64(sequence))) }
        #expect(log.bytes == 500)
        let trimmedBySize = log.trim(now: start)
        #expect(trimmedBySize)
        #expect(log.first == 2)
        #expect(log.bytes == 300)
        let trimmedAtMaxAge = log.trim(now: start + .seconds(30))
        #expect(!trimmedAtMaxAge, "exactly maxAge old is still kept")
        let trimmedPastMaxAge = log.trim(now: start + .seconds(31))
        #expect(trimmedPastMaxAge)
        #expect(log.count == 0)
        #expect(log.first == 5, "an empty log still knows where it is")
    }

    @Test("entries(from:) gives what is held from a position, nothing for a position out of the window")
    func positions() {
        var log = DeliveryLog(maxBytes: 1000, maxAge: .seconds(30))
        for sequence in 10..<15 { log.append(entry(UInt64(sequence))) }
        #expect(log.entries(from: 12)?.map(\.sequence) == [12, 13, 14])
        #expect(log.entries(from: 15)?.isEmpty == true)
        #expect(log.entries(from: 9) == nil)
        #expect(log.entries(from: 16) == nil)
    }
}

/// A socket as the shard sees it, whose writability the test switches.
private final class FakeMember: ShardMember {
    let readChannels: [ChannelKey]
    let encoding = FrameEncoding.raw
    var replies: [String] = []
    let logger: SocketLog
    var writable = true
    /// Frames it takes before its queue is full again (nil: no limit).
    var budget: Int? = nil
    var received: [String] = []
    var cut = false
    var claimsPrefix: [UInt8]
    var revokedWith: CloseReason? = nil

    init(_ channels: [String], claims: String = "{}", socketID: Int = 0) {
        readChannels = channels.map(ChannelKey.init)
        logger = SocketLog(logger: Logger(label: "fake") { _ in SwiftLogNoOpLogHandler() }, socketID: socketID)
        claimsPrefix = Envelope.claimsPrefix(try! JSONParser.parse(claims))
    }

    func deliver(_ frame: ByteBuffer) -> Bool {
        guard !cut else { return true }
        guard writable, budget ?? 1 > 0 else { return false }
        budget = budget.map { $0 - 1 }
        received.append(String(buffer: frame))
        return true
    }
    func deliverReply(_ frame: ByteBuffer) { received.append("reply:" + String(buffer: frame)) }
    func flushIfNeeded() {}
    func cutOff() { cut = true }
    func tick(now: NIODeadline, wallClock: Double) {}
    func resumeIfPaused() {}
    func revoke(_ reason: CloseReason) { revokedWith = reason }
    func shutDown() {}
    func abort() {}
}

private struct NoProducer: NotificationProducer {
    func produceMore() {}
}

/// A shard on an embedded loop, fed notifications the way the hub feeds it.
private final class ShardHarness {
    let loop = EmbeddedEventLoop()
    let shard: LoopShard
    let inbox = ShardInbox()
    private var sequence: UInt64 = 0
    var nextSequence: UInt64 { sequence }

    deinit {
        // A member and the lists it reads refer to each other until it is removed, as a
        // closing socket removes itself (LeakSanitizer otherwise reports every one).
        for record in Array(shard.members.values) { shard.remove(record.member) }
    }

    init(maxBytes: Int = 1 << 20, presence: PresenceBook? = nil) {
        shard = LoopShard(
            eventLoop: loop, registry: ListenRegistry(status: DatabaseStatus()), window: (maxBytes, .seconds(30)),
            presence: presence)
    }

    func open(_ member: FakeMember) {
        shard.hold(member.readChannels) {}
        shard.add(member)
        for key in member.readChannels { shard.subscribe(member, to: key) }
    }

    /// Notifies `texts` as (channel, payload) in one batch; the frame is the payload itself.
    func notify(_ texts: [(String, String)]) {
        let batch = texts.map { channel, text -> Notification in
            defer { sequence += 1 }
            return Notification(sequence: sequence, channel: ChannelKey(channel), frame: ByteBuffer(string: text))
        }
        let completion = BatchCompletion(
            shards: 1, bytes: 0, backlog: WatermarkedLevel(Watermark(low: 0, high: 1 << 30)), producer: NoProducer())
        _ = inbox.append(ShardInbox.Entry(batch: batch, completion: completion, receivedAt: .now()))
        shard.drain(inbox)
    }
}

@Suite("LoopShard delivery")
struct LoopShardDeliveryTests {
    @Test("a socket that cannot take frames replays them from the log, in order across its channels, then goes live")
    func catchUpInCommitOrder() {
        let harness = ShardHarness()
        let member = FakeMember(["a", "b"])
        let other = FakeMember(["a"])
        harness.open(member)
        harness.open(other)
        harness.notify([("a", "1")])
        member.writable = false
        harness.notify([("b", "2"), ("a", "3"), ("c", "not read"), ("b", "4")])
        #expect(member.received == ["1"])
        #expect(other.received == ["1", "3"], "a lagging socket holds up nobody")
        member.writable = true
        harness.shard.canWrite(member)
        #expect(member.received == ["1", "2", "3", "4"])
        harness.notify([("a", "5")])
        #expect(member.received == ["1", "2", "3", "4", "5"], "live again: no gap, no duplicate")
        #expect(harness.shard.counters.fellBehind == 1)
        #expect(harness.shard.counters.caughtUp == 1)
        #expect(harness.shard.counters.replayed == 3)
    }

    @Test("a replay that fills the socket again stops there and goes on at the next chance")
    func partialReplay() {
        let harness = ShardHarness()
        let member = FakeMember(["a"])
        harness.open(member)
        member.writable = false
        harness.notify((1...5).map { ("a", "\($0)") })
        member.writable = true
        // Two frames per chance, as a socket whose queue fills after two writes.
        member.budget = 2
        harness.shard.canWrite(member)
        #expect(member.received == ["1", "2"])
        harness.notify([("a", "6")])
        #expect(member.received == ["1", "2"], "still lagging: new frames wait in the log")
        member.budget = 2
        harness.shard.canWrite(member)
        member.budget = nil
        harness.shard.canWrite(member)
        #expect(member.received == ["1", "2", "3", "4", "5", "6"])
        harness.notify([("a", "7")])
        #expect(member.received.last == "7")
    }

    @Test("a socket whose position leaves the window is cut off, once, and gets nothing more")
    func cutOffOutOfWindow() {
        let harness = ShardHarness(maxBytes: 4)
        let member = FakeMember(["a"])
        let reader = FakeMember(["a"])
        harness.open(member)
        harness.open(reader)
        member.writable = false
        harness.notify([("a", "1"), ("a", "2"), ("a", "3")])
        #expect(!member.cut, "3 bytes behind: within the 4-byte window")
        harness.notify([("a", "4"), ("a", "5")])
        #expect(member.cut)
        #expect(harness.shard.counters.cutOff == 1)
        member.writable = true
        harness.shard.canWrite(member)
        #expect(member.received.isEmpty)
        #expect(reader.received == ["1", "2", "3", "4", "5"])
    }

    @Test("disconnect closes the members whose claims contain the filter, and only those")
    func disconnectMatching() {
        let harness = ShardHarness()
        let alice = FakeMember(["a"], claims: #"{"mode":"r","sub":"alice","roles":["admin","dev"]}"#)
        let bob = FakeMember(["a"], claims: #"{"mode":"r","sub":"bob","roles":["dev"]}"#)
        let anonymous = FakeMember(["a"], claims: #"{"mode":"r"}"#)
        for member in [alice, bob, anonymous] { harness.open(member) }
        harness.shard.disconnect(matching: try! JSONParser.parse(#"{"roles":["admin"]}"#), reason: .revoked("bye"))
        #expect(alice.revokedWith == .revoked("bye"))
        #expect(bob.revokedWith == nil && anonymous.revokedWith == nil)
        harness.shard.disconnect(matching: try! JSONParser.parse(#"{"sub":"bob"}"#), reason: .revoked("you too"))
        #expect(bob.revokedWith?.code == 3003 && bob.revokedWith?.text == "you too")
        #expect(anonymous.revokedWith == nil)
    }
}

@Suite("LoopShard presence")
struct LoopShardPresenceTests {
    static func changes(_ book: PresenceBook) -> [String] {
        book.takeChanges().map { "\($0.key.socket) \($0.key.channel) \($0.row == nil ? "left" : "on")" }.sorted()
    }

    @Test("members are reported as they start and stop reading; watchers get joins and are counted until they go")
    func reportsAndWatchers() {
        let book = PresenceBook(settings: PresenceSettings())
        let harness = ShardHarness(presence: book)
        let alice = FakeMember(["a", "b"], claims: #"{"sub":"alice"}"#, socketID: 1)
        let bob = FakeMember(["a"], claims: #"{"sub":"bob"}"#, socketID: 2)
        harness.open(alice)
        harness.open(bob)
        #expect(Self.changes(book) == ["1 a on", "1 b on", "2 a on"])
        harness.shard.subscribe(alice, to: ChannelKey("a"))
        #expect(Self.changes(book).isEmpty, "subscribing again is no new row")

        harness.shard.watchPresence(alice, of: ChannelKey("a"), true)
        harness.shard.watchPresence(alice, of: ChannelKey("a"), true)
        harness.shard.watchPresence(bob, of: ChannelKey("b"), true)  // bob does not read b
        #expect(book.watchers.load(ordering: .relaxed) == 1)
        harness.shard.presenceChanged(ChannelKey("a"), frame: ByteBuffer(string: "join"))
        harness.shard.presenceChanged(ChannelKey("b"), frame: ByteBuffer(string: "elsewhere"))
        #expect(alice.received == ["reply:join"] && bob.received.isEmpty)

        harness.shard.unsubscribe(alice, from: ChannelKey("b"))
        #expect(Self.changes(book) == ["1 b left"])
        harness.shard.remove(alice)
        #expect(book.watchers.load(ordering: .relaxed) == 0, "closing unwatches")
        #expect(Self.changes(book) == ["1 a left"])
        #expect(book.members(of: "a").map(\.id) == [#""bob""#])
    }
}

@Suite("LoopShard delivery, randomized")
struct LoopShardPropertyTests {
    /// Readers that keep losing and regaining writability, and a reader that keeps leaving and
    /// coming back with `since`, while notifications on two channels keep arriving: each gets
    /// every message of its channels exactly once, in order, whatever the interleaving.
    @Test(arguments: 0..<60)
    func noGapNoDuplicate(seed: Int) {
        var random = SplitMix(seed: UInt64(seed))
        let harness = ShardHarness()
        var sequences: [String: UInt64] = [:]  // payload -> sequence
        var sent: [String: [String]] = ["a": [], "b": []]
        var next = 0
        let steady = FakeMember(["a", "b"])
        harness.open(steady)
        var resumer: FakeMember? = FakeMember(["a"])
        harness.shard.add(resumer!)
        harness.shard.hold([ChannelKey("a")]) {}
        harness.shard.subscribe(resumer!, to: ChannelKey("a"))
        // One message before the resumer's first offset, so "since" can name the start.
        harness.notify([("b", "b0")])
        sent["b"]!.append("b0")
        var resumed: [String] = []
        var lastSeen: UInt64 = 0
        let since = { (sequence: UInt64) in harness.shard.offsets.offset(sequence)[...] }

        for _ in 0..<300 {
            switch random.next() % 7 {
            case 0, 1, 2:
                let count = Int(random.next() % 4) + 1
                var batch: [(String, String)] = []
                for _ in 0..<count {
                    let channel = random.next() % 3 == 0 ? "b" : "a"
                    next += 1
                    let payload = "\(channel)\(next)"
                    batch.append((channel, payload))
                    sent[channel]!.append(payload)
                }
                let first = harness.nextSequence
                for (offset, item) in batch.enumerated() { sequences[item.1] = first + UInt64(offset) }
                harness.notify(batch)
            case 3:
                // Writable again, sometimes with room for only a few frames.
                steady.writable.toggle()
                steady.budget = random.next() % 2 == 0 ? nil : Int(random.next() % 3)
                if steady.writable { harness.shard.canWrite(steady) }
            case 4:
                if let member = resumer {
                    member.writable.toggle()
                    if member.writable { harness.shard.canWrite(member) }
                }
            case 5:
                // The resumer leaves, keeping the last offset it saw.
                if let member = resumer {
                    let messages = member.received.filter { !$0.hasPrefix("reply:") }
                    resumed += messages
                    if let last = messages.last { lastSeen = sequences[last]! }
                    harness.shard.remove(member)
                    harness.shard.release([ChannelKey("a")])
                    resumer = nil
                }
            default:
                // It comes back and subscribes with since.
                if resumer == nil {
                    let member = FakeMember(["a"])
                    member.writable = random.next() % 2 == 0
                    harness.shard.add(member)
                    harness.shard.hold([ChannelKey("a")]) {}
                    harness.shard.subscribe(
                        member, to: ChannelKey("a"), since: since(lastSeen),
                        reply: { _, _ in ByteBuffer(string: "subscribed") })
                    resumer = member
                }
            }
        }
        steady.writable = true
        steady.budget = nil
        harness.shard.canWrite(steady)
        if resumer == nil {
            let member = FakeMember(["a"])
            harness.shard.add(member)
            harness.shard.hold([ChannelKey("a")]) {}
            harness.shard.subscribe(
                member, to: ChannelKey("a"), since: since(lastSeen),
                reply: { _, _ in ByteBuffer(string: "subscribed") })
            resumer = member
        }
        if let member = resumer {
            member.writable = true
            harness.shard.canWrite(member)
            resumed += member.received.filter { !$0.hasPrefix("reply:") }
        }
        let steadyGot = steady.received.filter { !$0.hasPrefix("reply:") }
        #expect(steadyGot.filter { $0.hasPrefix("a") } == sent["a"]!)
        #expect(steadyGot.filter { $0.hasPrefix("b") } == sent["b"]!)
        // The resumer: every message of a since it first subscribed, once each, in order.
        #expect(resumed == sent["a"]!, "seed \(seed)")
    }
}

/// A small deterministic generator, so a failing seed fails the same way again.
private struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
