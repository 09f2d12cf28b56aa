import Logging
import NIOCore
import NIOWebSocket

/// What every session needs from the server, built once and shared: one instance referenced
/// by each (stored in every session as a struct, it cost each idle socket a copy).
final class SessionEnvironment: Sendable {
    let publisher: any MessagePublisher
    let channels: ChannelSettings
    let limits: Limits
    let logger: Logger
    /// Checks the tokens of `pgws.v1` refreshes, with the keys handshakes use.
    let keys: JWTKeyStore
    let offsets: OffsetSpace
    /// Which channels store their messages (durable), for publishing.
    let durableChannels: DurableDirectory
    /// A refreshed token is refused like a handshake's when its claims are revoked.
    let revocations: Revocations
    /// With presence on: who is on a channel, across servers.
    let presence: PresenceWriter?

    init(
        publisher: any MessagePublisher, channels: ChannelSettings, limits: Limits, logger: Logger,
        keys: JWTKeyStore, offsets: OffsetSpace, durableChannels: DurableDirectory = DurableDirectory(),
        revocations: Revocations = Revocations(), presence: PresenceWriter? = nil
    ) {
        self.revocations = revocations
        self.presence = presence
        self.publisher = publisher
        self.channels = channels
        self.limits = limits
        self.logger = logger
        self.keys = keys
        self.offsets = offsets
        self.durableChannels = durableChannels
    }
}

/// One open WebSocket, raw or `pgws.v1`, as a channel handler: carries out what its
/// `WebSocketStateMachine` and `PublishFlow` decide, writes what its shard delivers, and gives
/// its `Admission` and its channels back when the connection ends.
final class WebSocketSession: ChannelInboundHandler, RemovableChannelHandler, ShardMember {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    let id: Int
    let encoding: FrameEncoding
    let environment: SessionEnvironment
    /// What the token grants; a `pgws.v1` refresh replaces it.
    var grant: Grant
    var claimsPrefix: [UInt8]
    let shard: LoopShard
    /// The channels this socket holds on its shard (so PostgreSQL LISTENs on them), with what
    /// it does on each; given back when it stops reading one, and all at teardown.
    var channels: [ChannelKey: ChannelState] = [:]
    /// `pgws.v1` channels subscribed with `presence: true`: their joins and leaves are sent.
    var watchesPresence: Set<ChannelKey> = []
    var machine: WebSocketStateMachine
    var flow = PublishFlow()
    private let admission: Admission
    private(set) var context: ChannelHandlerContext? = nil
    private var needsFlush = false
    /// NIO's queue for this socket is below its watermark (`max-socket-buffer`).
    private var isWritable = true

    enum ChannelState {
        /// Reads it.
        case reading
        /// Waiting for its LISTEN: the `pgws.v1` subscribe requests to answer then, in order,
        /// and whether an unsubscribe came meanwhile.
        case subscribing([(ref: JSONValue?, since: String?)], thenUnsubscribe: (ref: JSONValue?, asked: Bool))
    }

    init(
        id: Int, grant: Grant, token: VerifiedToken, encoding: FrameEncoding, admission: Admission, shard: LoopShard,
        environment: SessionEnvironment
    ) {
        self.id = id
        self.grant = grant
        self.claimsPrefix = Envelope.claimsPrefix(token.claims)
        self.encoding = encoding
        self.environment = environment
        self.admission = admission
        self.shard = shard
        let maxFrame = environment.limits.maxMessageSize + (encoding == .v1 ? V1Protocol.frameAllowance : 0)
        self.machine = WebSocketStateMachine(
            settings: .init(
                pingInterval: environment.limits.pingInterval, pongTimeout: environment.limits.pongTimeout,
                maxMessageSize: maxFrame, expiresAt: token.expiresAt),
            now: .now())
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        shard.add(self)
        for key in admission.takeChannels() {
            channels[key] = .reading
            if encoding == .v1 {
                shard.subscribe(self, to: key, reply: subscribedReply(channel: key.name, ref: nil, since: nil))
            } else {
                shard.subscribe(self, to: key)
            }
        }
        sendMetaEvent(.connectionOpen)
        logger.log(
            .debug, "socket opened",
            [.channels: "\(grant.channelList)", .mode: "\(grant.mode)", .event: "\(encoding)"])
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
        guard machine.connectionClosed() else { return }
        shard.remove(self)
        shard.release(Array(channels.keys))
        channels = [:]
        for message in flow.takeHeld() { environment.publisher.submitEvent(message, lane: id) }
        admission.giveBack()
        sendMetaEvent(.connectionClose)
        logger.log(.debug, "socket closed", [:])
    }

    // MARK: - Frames from the client

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        perform(machine.received(unwrapInboundIn(data), now: .now()))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case NIOWebSocketError.invalidFrameLength:
            perform(machine.fail(.messageTooBig(limit: machine.settings.maxMessageSize)))
        case NIOWebSocketError.fragmentedControlFrame, NIOWebSocketError.multiByteControlFrameLength:
            perform(machine.fail(.protocolError("invalid control frame")))
        default:
            logger.log(.debug, "socket error", [.error: "\(error)"])
            context.close(promise: nil)
        }
    }

    /// Carries out what the state machine decided.
    private func perform(_ action: WebSocketStateMachine.Action) {
        guard let context else { return }
        switch action {
        case .none:
            break
        case .deliver(let message):
            guard message.withUnsafeReadableBytes(isValidUTF8) else { return close(.invalidUTF8) }
            switch encoding {
            case .v1: receivedRequest(message)
            case .raw, .sse: received(message: message)
            }
        case .sendPong(let data):
            let pong = WebSocketFrames.frame(opcode: .pong, payload: data, allocator: context.channel.allocator)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .sendPing:
            let ping = WebSocketFrames.frame(opcode: .ping, payload: ByteBuffer(), allocator: context.channel.allocator)
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(ping), promise: written)
            written.futureResult.assumeIsolated().whenSuccess { [self] in machine.pingSent(now: .now()) }
        case .sendClose(let reason):
            writeClose(reason, context: context)
        case .sendCloseAndDrop(let reason):
            let channel = context.channel
            writeClose(reason, context: context).whenComplete { _ in channel.close(promise: nil) }
        case .drop(let why):
            if let why { logger.log(.info, "\(why)", [:]) }
            context.close(promise: nil)
        }
    }

    @discardableResult
    private func writeClose(_ reason: CloseReason, context: ChannelHandlerContext) -> EventLoopFuture<Void> {
        needsFlush = false
        if !reason.isRoutine, reason.text != "" {
            logger.log(.info, "closing socket", [.closeCode: "\(reason.code)", .closeReason: "\(reason.text)"])
        }
        let frame = WebSocketFrames.close(code: reason.code, reason: reason.text, allocator: context.channel.allocator)
        return context.writeAndFlush(wrapOutboundOut(frame))
    }

    func close(_ reason: CloseReason) {
        perform(machine.close(reason, now: .now()))
    }

    // MARK: - ShardMember

    var logger: SocketLog { SocketLog(logger: environment.logger, socketID: id) }

    func deliver(_ frame: ByteBuffer) -> Bool {
        guard machine.isOpen, let context else { return true }  // closing: it gets nothing more
        guard isWritable else { return false }
        context.write(wrapOutboundOut(frame), promise: nil)
        needsFlush = true
        return true
    }

    func deliverReply(_ frame: ByteBuffer) {
        guard machine.isOpen, let context else { return }
        context.write(wrapOutboundOut(frame), promise: nil)
        needsFlush = true
    }

    func flushIfNeeded() {
        guard needsFlush, let context else { return }
        needsFlush = false
        context.flush()
    }

    func cutOff() {
        logger.log(.debug, "socket fell out of the delivery window", [.closeCode: "\(CloseReason.tooSlow.code)"])
        close(.tooSlow)
    }

    func tick(now: NIODeadline, wallClock: Double) {
        perform(machine.tick(now: now, wallClock: wallClock))
    }

    func resumeIfPaused() {
        perform(flow.relieved(databaseUp: environment.publisher.isDatabaseUp, submit: submit))
    }

    func revoke(_ reason: CloseReason) {
        close(reason)
    }

    func shutDown() {
        close(.shuttingDown)
    }

    func abort() {
        context?.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // Below max-socket-buffer again: replay what the shard's log holds for this socket.
        isWritable = context.channel.isWritable
        if isWritable { shard.canWrite(self) }
        context.fireChannelWritabilityChanged()
    }

    // MARK: - Publishing (both protocols)

    /// Where a client message for `channel` is sent, and how large its envelope may be. A
    /// durable channel stores it on that channel, whatever `publish-to` says, and takes up to
    /// 1 MiB as long as the audit copy, if any, goes to a durable channel too; anything else
    /// is a NOTIFY and must fit PostgreSQL's limit.
    func destination(of channel: String) -> (channel: String, maxEnvelope: Int) {
        let settings = environment.channels
        let durable = environment.durableChannels
        guard durable.contains(ChannelKey(channel)) else {
            return (settings.notifyChannel(for: channel), Envelope.maxPayloadBytes)
        }
        let auditFits = settings.auditChannel.map { durable.contains(ChannelKey($0)) } ?? true
        return (channel, auditFits ? Limits.maxDurablePayload : Envelope.maxPayloadBytes)
    }

    func submit(_ message: OutgoingMessage) -> SubmitResult {
        environment.publisher.submit(message, lane: id)
    }

    /// Offers a client message to the notifier, pausing or resuming reading as it answers.
    func publish(_ message: OutgoingMessage) {
        perform(flow.offer(message, databaseUp: environment.publisher.isDatabaseUp, submit: submit))
    }

    private func perform(_ action: PublishFlow.Action) {
        switch action {
        case .none:
            break
        case .pauseReading:
            _ = context?.channel.setOption(.autoRead, value: false)
        case .resumeReading:
            guard let context else { return }
            _ = context.channel.setOption(.autoRead, value: true)
            context.read()
        case .refused(let messages):
            switch encoding {
            case .v1:
                for message in messages {
                    (message.sender as? V1PublishHandle)?.notTaken()
                }
            case .raw, .sse: close(.databaseUnavailable)
            }
        }
    }

    func sendMetaEvent(_ event: Envelope.Event) {
        environment.sendMetaEvent(event, grant: grant, claimsPrefix: claimsPrefix, lane: id, logger: logger)
    }

    /// This session, for code on other threads (database threads, the listener's callbacks)
    /// that must come back to its loop.
    var handle: SessionHandle {
        SessionHandle(session: NIOLoopBound(self, eventLoop: shard.eventLoop))
    }
}

struct SessionHandle: Sendable {
    let session: NIOLoopBound<WebSocketSession>

    /// Runs `body` with the session, on its event loop, in a later turn.
    func onLoop(_ body: @escaping @Sendable (WebSocketSession) -> Void) {
        let session = self.session
        session.eventLoop.execute { body(session.value) }
    }
}
