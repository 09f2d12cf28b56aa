import Logging
import NIOCore
import NIOWebSocket

/// What every session needs from the server, built once.
struct SessionEnvironment: Sendable {
    let publisher: any MessagePublisher
    let channels: ChannelSettings
    let limits: Limits
    let logger: Logger
}

/// One open WebSocket, as a channel handler: carries out what its `WebSocketStateMachine`
/// and `PublishFlow` decide, writes broadcast frames for its shard, and gives its
/// `Admission` back when the connection ends.
final class WebSocketSession: ChannelInboundHandler, RemovableChannelHandler, ShardMember {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    let id: Int
    let grant: Grant
    let readChannels: [ChannelKey]
    let claimsPrefix: [UInt8]
    let environment: SessionEnvironment
    /// Carries `socket_id` on every line.
    let logger: Logger
    private let admission: Admission
    private let shard: LoopShard
    private var machine: WebSocketStateMachine
    private var flow = PublishFlow()
    private var context: ChannelHandlerContext? = nil
    private var needsFlush = false
    /// NIO's queue for this socket is below its watermark (`max-socket-buffer`).
    private var isWritable = true

    init(
        id: Int, grant: Grant, token: VerifiedToken, admission: Admission, shard: LoopShard,
        environment: SessionEnvironment
    ) {
        self.id = id
        self.grant = grant
        self.readChannels = admission.readChannels
        self.claimsPrefix = Envelope.claimsPrefix(token.claims)
        self.environment = environment
        self.admission = admission
        self.shard = shard
        var logger = environment.logger
        logger[.socketID] = "\(id)"
        self.logger = logger
        self.machine = WebSocketStateMachine(
            settings: .init(
                pingInterval: environment.limits.pingInterval, pongTimeout: environment.limits.pongTimeout,
                maxMessageSize: environment.limits.maxMessageSize, expiresAt: token.expiresAt),
            now: .now())
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        shard.add(self)
        sendMetaEvent(.connectionOpen)
        logger.log(.debug, "socket opened", [.channels: "\(grant.channelList)", .mode: "\(grant.mode)"])
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
        for message in flow.takeHeld() { environment.publisher.submitEvent(message, lane: id) }
        admission.giveBack()
        sendMetaEvent(.connectionClose)
        logger.debug("socket closed")
    }

    // MARK: - Frames from the client

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        perform(machine.received(unwrapInboundIn(data), now: .now()))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case NIOWebSocketError.invalidFrameLength:
            perform(machine.fail(.messageTooBig(limit: environment.limits.maxMessageSize)))
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
            received(message: message)
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
            if let why { logger.info("\(why)") }
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

    func deliver(_ frame: ByteBuffer) -> Bool {
        guard machine.isOpen, let context else { return true }  // closing: it gets nothing more
        guard isWritable else { return false }
        context.write(wrapOutboundOut(frame), promise: nil)
        needsFlush = true
        return true
    }

    func cutOff() {
        logger.log(.debug, "socket fell out of the delivery window", [.closeCode: "\(CloseReason.tooSlow.code)"])
        close(.tooSlow)
    }

    func flushIfNeeded() {
        guard needsFlush, let context else { return }
        needsFlush = false
        context.flush()
    }

    func tick(now: NIODeadline, wallClock: Double) {
        perform(machine.tick(now: now, wallClock: wallClock))
    }

    func resumeIfPaused() {
        perform(flow.relieved(databaseUp: environment.publisher.isDatabaseUp, submit: submit))
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
        case .close(let reason):
            close(reason)
        }
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

    // MARK: - Publishing

    /// A complete text message from the client: one NOTIFY per channel (plus audit copies).
    private func received(message: ByteBuffer) {
        let limits = environment.limits
        guard grant.mode.contains(.write) else { return close(.readOnly) }
        guard message.readableBytes <= limits.maxMessageSize else {
            return close(.messageTooBig(limit: limits.maxMessageSize))
        }
        guard isValidUTF8(message.readableBytesView) else { return close(.invalidUTF8) }
        let deliveredAt = UniqueTimestamps.shared.next()
        let settings = environment.channels
        let audit = settings.auditChannel
        var notifications: [(channel: String, payload: [UInt8])] = []
        notifications.reserveCapacity(grant.channels.count * (audit == nil ? 1 : 2))
        let fits = message.withUnsafeReadableBytes { payload -> Bool in
            for channel in grant.channels {
                let envelope = Envelope.encode(
                    event: .websocketMessage, channel: channel, payload: payload,
                    claimsPrefix: claimsPrefix, deliveredAtMicroseconds: deliveredAt)
                guard envelope.count <= Envelope.maxPayloadBytes else { return false }
                notifications.append((settings.notifyChannel(for: channel), envelope))
                if let audit { notifications.append((audit, envelope)) }
            }
            return true
        }
        guard fits else { return close(.envelopeTooBig) }
        let sender = RejectionHandle(session: self, eventLoop: context!.eventLoop)
        let outgoing = OutgoingMessage(notifications: notifications, sender: sender)
        perform(flow.offer(outgoing, databaseUp: environment.publisher.isDatabaseUp, submit: submit))
    }

    private func submit(_ message: OutgoingMessage) -> SubmitResult {
        environment.publisher.submit(message, lane: id)
    }

    private func sendMetaEvent(_ event: Envelope.Event) {
        guard let meta = environment.channels.metaChannel else { return }
        let envelope = Envelope.encode(
            event: event, channel: meta, payload: grant.channels.joined(separator: ","),
            claimsPrefix: claimsPrefix, deliveredAtMicroseconds: UniqueTimestamps.shared.next())
        guard envelope.count <= Envelope.maxPayloadBytes else {
            logger.log(.warning, "meta event too large for NOTIFY, not sent", [.event: "\(event.rawValue)"])
            return
        }
        let notification = (environment.channels.notifyChannel(for: meta), envelope)
        environment.publisher.submitEvent(OutgoingMessage(notifications: [notification], sender: nil), lane: id)
    }

    fileprivate func rejectedByDatabase(reason: String) {
        close(.rejectedByDatabase(reason))
    }
}

/// Lets a database thread close the socket whose message PostgreSQL refused.
private struct RejectionHandle: MessageSender {
    let session: NIOLoopBound<WebSocketSession>

    init(session: WebSocketSession, eventLoop: any EventLoop) {
        self.session = NIOLoopBound(session, eventLoop: eventLoop)
    }

    func messageRejected(reason: String) {
        let session = self.session
        session.eventLoop.execute { session.value.rejectedByDatabase(reason: reason) }
    }
}

/// UTF-8 validation without building a String.
func isValidUTF8(_ bytes: ByteBufferView) -> Bool {
    var iterator = bytes.makeIterator()
    var decoder = Unicode.UTF8()
    while true {
        switch decoder.decode(&iterator) {
        case .scalarValue: continue
        case .emptyInput: return true
        case .error: return false
        }
    }
}
