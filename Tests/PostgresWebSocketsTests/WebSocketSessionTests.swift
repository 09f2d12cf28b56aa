import Logging
import NIOCore
import NIOConcurrencyHelpers
import NIOEmbedded
import NIOWebSocket
import Testing

@testable import PostgresWebSockets

/// The notifier as a socket sees it, answering what the test says.
private final class ScriptedPublisher: MessagePublisher {
    private let state = NIOLockedValueBox<(answers: [SubmitResult], taken: [String], up: Bool)>(([], [], true))
    var isDatabaseUp: Bool { state.withLockedValue { $0.up } }
    func answer(_ answers: [SubmitResult], up: Bool = true) {
        state.withLockedValue {
            $0.answers = answers; $0.up = up
        }
    }
    var taken: [String] { state.withLockedValue { $0.taken } }

    func submit(_ message: OutgoingMessage, lane: Int) -> SubmitResult {
        state.withLockedValue { state in
            let answer = state.answers.isEmpty ? .accepted : state.answers.removeFirst()
            if answer != .full { state.taken.append(Self.payload(message)) }
            return answer
        }
    }

    func submitEvent(_ message: OutgoingMessage, lane: Int) {
        state.withLockedValue { $0.taken.append("event:" + Self.payload(message)) }
    }

    /// The client's text, out of the envelope.
    private static func payload(_ message: OutgoingMessage) -> String {
        let envelope = String(decoding: message.notifications[0].payload, as: UTF8.self)
        guard let value = try? JSONParser.parse(envelope), let payload = value["payload"]?.stringValue else {
            return envelope
        }
        return payload
    }
}

/// Counts the reads the session asks its channel for: a resumed socket asks for one.
private final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = Never
    var reads = 0
    func read(context: ChannelHandlerContext) {
        reads += 1
        context.read()
    }
}

private final class SessionHarness {
    let loop = EmbeddedEventLoop()
    let channel: EmbeddedChannel
    let shard: LoopShard
    let publisher = ScriptedPublisher()
    let reads = ReadCounter()
    let slots = ConnectionSlots(limit: 10)

    init(mode: String = "rw") throws {
        channel = EmbeddedChannel(loop: loop)
        let registry = ListenRegistry(status: DatabaseStatus())
        shard = LoopShard(eventLoop: loop, registry: registry, window: (64 << 20, .seconds(30)))
        let claims = try JSONParser.parse(#"{"mode":"\#(mode)","channel":"chat"}"#)
        let grant = try Grant.authorize(claims: claims, requestedChannel: nil)
        let readChannels = grant.mode.contains(.read) ? [ChannelKey("chat")] : []
        let admission = Admission(readChannels: readChannels, shard: shard, slots: slots, whenListening: {})!
        var channels = ChannelSettings()
        channels.metaChannel = "meta"
        let environment = SessionEnvironment(
            publisher: publisher, channels: channels, limits: Limits(),
            logger: Logger(label: "session") { _ in SwiftLogNoOpLogHandler() },
            keys: JWTKeyStore(fixed: JWTVerifier(secret: Array("unused-secret-of-a-usable-length-32b".utf8))),
            offsets: OffsetSpace())
        let session = WebSocketSession(
            id: 1, grant: grant, token: VerifiedToken(claims: claims, expiresAt: nil), encoding: .raw,
            admission: admission, shard: shard, environment: environment)
        try channel.pipeline.syncOperations.addHandler(reads)
        try channel.pipeline.syncOperations.addHandler(session)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }

    deinit {
        // An open pipeline keeps the session alive (LeakSanitizer).
        _ = try? channel.finish(acceptAlreadyClosed: true)
    }

    func send(_ text: String) throws {
        try channel.writeInbound(clientFrame(.text, text))
    }
}

@Suite("WebSocketSession (EmbeddedChannel)")
struct WebSocketSessionChannelTests {
    @Test("a writer paused by a congested queue reads again when the shard passes on the relief")
    func pauseAndResume() throws {
        let harness = try SessionHarness()
        harness.publisher.answer([.congested])
        try harness.send("one")
        let readsBefore = harness.reads.reads
        harness.shard.resumePausedWriters()
        #expect(harness.reads.reads == readsBefore + 1, "resumed: the session asked for a read")
        harness.shard.resumePausedWriters()
        #expect(harness.reads.reads == readsBefore + 1, "not paused any more: relief does nothing")
        #expect(harness.publisher.taken == ["event:chat", "one"])
    }

    @Test("messages read while the queue is full wait in order, and go out at the relief")
    func heldMessagesKeepTheirOrder() throws {
        let harness = try SessionHarness()
        harness.publisher.answer([.full])
        try harness.send("a")
        try harness.send("b")
        #expect(harness.publisher.taken == ["event:chat"])
        harness.publisher.answer([])
        harness.shard.resumePausedWriters()
        #expect(harness.publisher.taken == ["event:chat", "a", "b"])
    }

    @Test("a full queue while PostgreSQL is down closes the writer with 1013")
    func fullWhileDown() throws {
        let harness = try SessionHarness()
        harness.publisher.answer([.full], up: false)
        try harness.send("lost?")
        var close = try #require(try harness.channel.readOutbound(as: ByteBuffer.self))
        close.moveReaderIndex(forwardBy: 2)
        #expect(close.readInteger(as: UInt16.self) == 1013)
        #expect(String(buffer: close) == "database unavailable")
    }

    @Test("broadcast frames are written once per socket and flushed once per pass; a closing socket gets none")
    func broadcastAndClose() throws {
        let harness = try SessionHarness(mode: "r")
        let frame = ByteBuffer(bytes: [0x81, 0x01, 0x41])
        let member = try harness.channel.pipeline.syncOperations.handler(type: WebSocketSession.self)
        #expect(member.deliver(frame))
        #expect(try harness.channel.readOutbound(as: ByteBuffer.self) == nil, "written, not flushed")
        member.flushIfNeeded()
        #expect(try harness.channel.readOutbound(as: ByteBuffer.self) == frame)
        member.shutDown()
        _ = try harness.channel.readOutbound(as: ByteBuffer.self)  // the close frame
        #expect(member.deliver(frame))
        member.flushIfNeeded()
        #expect(try harness.channel.readOutbound(as: ByteBuffer.self) == nil)
    }

    @Test("the socket's end gives its slot back and sends the close meta event, with what it held")
    func teardown() throws {
        let harness = try SessionHarness()
        harness.publisher.answer([.full])
        try harness.send("held")
        #expect(harness.slots.count == 1)
        try harness.channel.close().wait()
        #expect(harness.slots.count == 0)
        #expect(harness.publisher.taken == ["event:chat", "event:held", "event:chat"])
    }
}
