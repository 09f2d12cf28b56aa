import Logging
import NIOCore

/// A read-only stream of one channel as server-sent events (PROTOCOL.md): each message an
/// event with `id: <offset>`, a `Last-Event-ID` resumed like a `pgws.v1` `since` (after an
/// `event: gap` when that cannot be done in full), a keep-alive comment after `ping-interval`
/// without an event, and `event: expired` at the token's `exp`. It counts as a socket for
/// `max-connections`, meta events and shutdown.
final class EventStreamSession: ChannelInboundHandler, RemovableChannelHandler, ShardMember {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let responseHead =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\nx-accel-buffering: no\r\nconnection: close\r\n\r\n"
    static let gap = ByteBuffer(string: "event: gap\ndata: \n\n")
    static let expired = ByteBuffer(string: "event: expired\ndata: \n\n")
    static let keepAlive = ByteBuffer(string: ": keep-alive\n\n")

    let id: Int
    let encoding = FrameEncoding.sse
    var logger: SocketLog { SocketLog(logger: environment.logger, socketID: id) }
    private let grant: Grant
    let claimsPrefix: [UInt8]
    private let expiresAt: Double?
    private let lastEventID: String?
    private let environment: SessionEnvironment
    private let admission: Admission
    private let shard: LoopShard
    private var channels: [ChannelKey] = []
    private var context: ChannelHandlerContext? = nil
    private var isWritable = true
    private var needsFlush = false
    private var isOpen = true
    /// The stream is ending: nothing more is written.
    private var ended = false
    private var lastEvent = NIODeadline.now()

    init(
        id: Int, grant: Grant, token: VerifiedToken, lastEventID: String?, admission: Admission, shard: LoopShard,
        environment: SessionEnvironment
    ) {
        self.id = id
        self.grant = grant
        self.claimsPrefix = Envelope.claimsPrefix(token.claims)
        self.expiresAt = token.expiresAt
        self.lastEventID = lastEventID
        self.environment = environment
        self.admission = admission
        self.shard = shard
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        shard.add(self)
        channels = admission.takeChannels()
        for key in channels {
            shard.subscribe(
                self, to: key, since: lastEventID?[...], preface: { recovered in recovered ? nil : Self.gap })
        }
        flushIfNeeded()
        environment.sendMetaEvent(.connectionOpen, grant: grant, claimsPrefix: claimsPrefix, lane: id, logger: logger)
        logger.log(.debug, "event stream opened", [.channels: "\(grant.channelList)"])
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // An event stream is one way: whatever the client sends is not read.
    }

    func channelInactive(context: ChannelHandlerContext) {
        teardown()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        teardown()
        self.context = nil
    }

    private func teardown() {
        guard isOpen else { return }
        isOpen = false
        shard.remove(self)
        shard.release(channels)
        channels = []
        admission.giveBack()
        environment.sendMetaEvent(.connectionClose, grant: grant, claimsPrefix: claimsPrefix, lane: id, logger: logger)
        logger.log(.debug, "event stream closed", [:])
    }

    /// Ends the response (the stream's end is the connection's, as `connection: close` says).
    private func end() {
        guard !ended, let context else { return }
        ended = true
        flushIfNeeded()
        let channel = context.channel
        context.writeAndFlush(NIOAny(ByteBuffer())).whenComplete { _ in channel.close(promise: nil) }
    }

    // MARK: - ShardMember

    func deliver(_ frame: ByteBuffer) -> Bool {
        guard isOpen, !ended, let context else { return true }
        guard isWritable else { return false }
        context.write(NIOAny(frame), promise: nil)
        needsFlush = true
        lastEvent = .now()
        return true
    }

    func deliverReply(_ frame: ByteBuffer) {
        guard isOpen, !ended, let context else { return }
        context.write(NIOAny(frame), promise: nil)
        needsFlush = true
        lastEvent = .now()
    }

    func flushIfNeeded() {
        guard needsFlush, let context else { return }
        needsFlush = false
        context.flush()
    }

    func cutOff() {
        // Too far behind to follow: the stream ends; EventSource reconnects with its
        // Last-Event-ID and learns of the gap.
        logger.log(.info, "ending event stream of a client too slow", [.closeReason: "client too slow"])
        end()
    }

    func tick(now: NIODeadline, wallClock: Double) {
        if let expiresAt, wallClock >= expiresAt {
            deliverReply(Self.expired)
            end()
            return
        }
        if now - lastEvent >= environment.limits.pingInterval {
            deliverReply(Self.keepAlive)
            flushIfNeeded()
        }
    }

    func resumeIfPaused() {}

    /// Ends the stream after an `event: revoked` whose data is the reason, so that the
    /// client knows not to reconnect with the same token.
    func revoke(_ reason: CloseReason) {
        logger.log(
            .info, "ending revoked event stream", [.closeCode: "\(reason.code)", .closeReason: "\(reason.text)"])
        let data = reason.text.map { $0 == "\n" || $0 == "\r" ? " " : String($0) }.joined()
        deliverReply(ByteBuffer(string: "event: revoked\ndata: \(data)\n\n"))
        end()
    }

    func shutDown() {
        end()
    }

    func abort() {
        context?.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        isWritable = context.channel.isWritable
        if isWritable { shard.canWrite(self) }
        context.fireChannelWritabilityChanged()
    }
}
