import Logging
import NIOCore
import NIOWebSocket

/// One open WebSocket: turns client frames into NOTIFYs and writes broadcast frames.
///
/// It is added to the pipeline after the 101 response, owning the connection slot and the
/// channel references that the handshake acquired; `teardown` gives both back exactly once.
final class WebSocketSession: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = ByteBuffer

    private enum State {
        case pending, open, closing, closed
    }

    let id: Int
    let grant: Grant
    /// Channels this socket receives notifications on (none for write-only sockets).
    let readChannels: [String]
    private let server: ServerContext
    private let claimsPrefix: [UInt8]
    private let expiresAt: Double?
    private var context: ChannelHandlerContext? = nil
    private var shard: LoopShard? = nil
    private var state = State.pending
    private var needsFlush = false
    private var lastInbound = NIODeadline.now()
    private var ping = PingState.idle
    private var closeDeadline: NIODeadline? = nil
    private var fragments: ByteBuffer? = nil
    /// Messages read while the queue to PostgreSQL was full; submitted first when it drains.
    private var held: [OutgoingMessage] = []
    private var readingPaused = false

    init(id: Int, grant: Grant, token: VerifiedToken, server: ServerContext) {
        self.id = id
        self.grant = grant
        self.readChannels = grant.mode.contains(.read) ? grant.channels : []
        self.server = server
        self.claimsPrefix = Envelope.claimsPrefix(token.claims)
        self.expiresAt = token.expiresAt
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        state = .open
        lastInbound = .now()
        let shard = server.hub.shard(on: context.eventLoop)
        self.shard = shard
        shard.add(self)
        sendMetaEvent(.connectionOpen)
        server.logger.debug(
            "socket opened",
            metadata: ["channels": "\(grant.channels.joined(separator: ","))", "mode": "\(modeName)"])
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
        guard state != .closed else { return }
        let wasOpened = state != .pending
        state = .closed
        fragments = nil
        guard wasOpened else { return }
        shard?.remove(self)
        // What the client sent before it left still goes out: it was read, so it was taken.
        for message in held { server.notifier.submitEvent(message, lane: id) }
        held = []
        server.listener.release(readChannels)
        server.limiter.release()
        sendMetaEvent(.connectionClose)
        server.logger.debug("socket closed", metadata: ["channels": "\(grant.channels.joined(separator: ","))"])
    }

    private var modeName: String {
        switch (grant.mode.contains(.read), grant.mode.contains(.write)) {
        case (true, true): "rw"
        case (true, false): "r"
        default: "w"
        }
    }

    // MARK: - Broadcast (called by the loop's shard)

    func deliver(_ frame: ByteBuffer) {
        guard state == .open, let context else { return }
        context.write(wrapOutboundOut(frame), promise: nil)
        needsFlush = true
    }

    func flushIfNeeded() {
        guard needsFlush, let context else { return }
        needsFlush = false
        context.flush()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // Unsent output passed max-socket-buffer: stop feeding this socket, queue the close
        // frame behind what it already has, and give it until the close deadline to drain.
        if !context.channel.isWritable, state == .open {
            server.logger.info(
                "closing slow socket", metadata: ["limit_bytes": "\(server.configuration.maxSocketBuffer)"])
            close(code: CloseCode.policyViolation, reason: "client too slow")
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: - Timers (called by the loop's shard a few times per second)

    func tick(now: NIODeadline, wallClock: Double) {
        switch state {
        case .open:
            let config = server.configuration
            if let expiresAt, wallClock >= expiresAt {
                close(code: CloseCode.jwtExpired, reason: "JWT expired")
            } else {
                checkLiveness(now: now, config: config)
            }
        case .closing:
            if let closeDeadline, now >= closeDeadline { abort() }
        case .pending, .closed:
            break
        }
    }

    private enum PingState {
        case idle
        /// Written, still queued behind earlier frames in the server.
        case queued(since: NIODeadline)
        /// Handed to the kernel: the pong timeout runs from here, so a reader that is merely
        /// behind on a burst is not mistaken for a dead one.
        case sent(at: NIODeadline)
    }

    /// Pings a socket silent for `ping-interval`; drops one that does not answer within
    /// `pong-timeout` of the ping leaving, or whose ping cannot even leave in that time.
    private func checkLiveness(now: NIODeadline, config: Configuration) {
        switch ping {
        case .idle:
            guard now - lastInbound >= .fromSeconds(config.pingInterval), let context else { return }
            ping = .queued(since: now)
            let frame = WebSocketFrames.frame(
                opcode: .ping, payload: ByteBuffer(), allocator: context.channel.allocator)
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(frame), promise: written)
            written.futureResult.assumeIsolated().whenSuccess { [self] in
                if case .queued = ping { ping = .sent(at: .now()) }
            }
        case .queued(let since):
            if now - since >= .fromSeconds(config.pingInterval + config.pongTimeout) {
                server.logger.info("dropping socket whose ping could not be sent")
                abort()
            }
        case .sent(let at):
            if now - at >= .fromSeconds(config.pongTimeout) {
                server.logger.info("dropping socket that stopped answering pings")
                abort()
            }
        }
    }

    // MARK: - Closing

    /// Starts the closing handshake: sends a close frame and waits (until the deadline)
    /// for the peer's close frame before dropping the connection.
    func close(code: UInt16, reason: String) {
        guard state == .open, let context else { return }
        state = .closing
        fragments = nil
        closeDeadline = .now() + .fromSeconds(server.configuration.pongTimeout)
        let frame = WebSocketFrames.close(code: code, reason: reason, allocator: context.channel.allocator)
        needsFlush = false
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        if code != CloseCode.goingAway && code != CloseCode.normal {
            server.logger.info("closing socket", metadata: ["code": "\(code)", "reason": "\(reason)"])
        }
    }

    /// Sends a close frame and drops the connection once it is written: for errors after
    /// which the frame decoder cannot read the peer's answer.
    private func fail(code: UInt16, reason: String) {
        guard let context, state == .open || state == .closing else { return }
        if state == .open {
            state = .closing
            let frame = WebSocketFrames.close(code: code, reason: reason, allocator: context.channel.allocator)
            server.logger.info("closing socket", metadata: ["code": "\(code)", "reason": "\(reason)"])
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.close(promise: nil)
        }
    }

    func abort() {
        context?.close(promise: nil)
    }

    // MARK: - Client frames

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        lastInbound = .now()
        ping = .idle
        guard state == .open || state == .closing else { return }
        guard frame.maskKey != nil else {
            fail(code: CloseCode.protocolError, reason: "client frames must be masked")
            return
        }
        guard !frame.rsv1, !frame.rsv2, !frame.rsv3 else {
            fail(code: CloseCode.protocolError, reason: "reserved bits set without an extension")
            return
        }
        if frame.opcode == .connectionClose {
            receivedClose(frame, context: context)
            return
        }
        guard state == .open else { return }  // closing: only the peer's close frame matters now
        switch frame.opcode {
        case .ping:
            let pong = WebSocketFrames.frame(
                opcode: .pong, payload: frame.unmaskedData, allocator: context.channel.allocator)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .pong:
            break
        case .text:
            guard fragments == nil else {
                fail(code: CloseCode.protocolError, reason: "new message before the previous one ended")
                return
            }
            if frame.fin {
                received(message: frame.unmaskedData)
            } else {
                fragments = frame.unmaskedData
            }
        case .continuation:
            guard var buffer = fragments else {
                fail(code: CloseCode.protocolError, reason: "continuation frame without a message")
                return
            }
            var data = frame.unmaskedData
            guard buffer.readableBytes + data.readableBytes <= server.configuration.maxMessageSize else {
                close(
                    code: CloseCode.messageTooBig,
                    reason: "message exceeds \(server.configuration.maxMessageSize) bytes")
                return
            }
            fragments = nil  // drop the stored reference so the append does not copy
            buffer.writeBuffer(&data)
            if frame.fin {
                received(message: buffer)
            } else {
                fragments = buffer
            }
        case .binary:
            close(code: CloseCode.unsupportedData, reason: "binary frames are not supported")
        default:
            fail(code: CloseCode.protocolError, reason: "unknown opcode")
        }
    }

    private func receivedClose(_ frame: WebSocketFrame, context: ChannelHandlerContext) {
        if state == .closing {
            context.close(promise: nil)  // the answer to our close frame
            return
        }
        state = .closing
        var data = frame.unmaskedData
        var code = CloseCode.normal
        if let peerCode = data.readInteger(as: UInt16.self), CloseCode.isValidFromPeer(peerCode) {
            code = peerCode
        }
        let reply = WebSocketFrames.close(code: code, reason: "", allocator: context.channel.allocator)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(reply)).whenComplete { _ in channel.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case NIOWebSocketError.invalidFrameLength:
            fail(code: CloseCode.messageTooBig, reason: "message exceeds \(server.configuration.maxMessageSize) bytes")
        case NIOWebSocketError.fragmentedControlFrame, NIOWebSocketError.multiByteControlFrameLength:
            fail(code: CloseCode.protocolError, reason: "invalid control frame")
        default:
            server.logger.debug("socket error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    /// A complete text message from the client: becomes one NOTIFY per channel (plus audit).
    private func received(message: ByteBuffer) {
        let config = server.configuration
        guard grant.mode.contains(.write) else {
            close(code: CloseCode.policyViolation, reason: "socket is read-only: its JWT mode is r")
            return
        }
        guard message.readableBytes <= config.maxMessageSize else {
            close(code: CloseCode.messageTooBig, reason: "message exceeds \(config.maxMessageSize) bytes")
            return
        }
        guard isValidUTF8(message.readableBytesView) else {
            close(code: CloseCode.invalidUTF8, reason: "text frame is not valid UTF-8")
            return
        }
        let deliveredAt = DeliveryClock.shared.nextMicroseconds()
        var notifications: [(channel: String, payload: [UInt8])] = []
        notifications.reserveCapacity(grant.channels.count * (config.auditChannel == nil ? 1 : 2))
        let fits = message.withUnsafeReadableBytes { payload -> Bool in
            for channel in grant.channels {
                let envelope = Envelope.encode(
                    event: .websocketMessage, channel: channel, payload: payload,
                    claimsPrefix: claimsPrefix, deliveredAtMicroseconds: deliveredAt)
                guard envelope.count <= Envelope.maxPayloadBytes else { return false }
                notifications.append((channel, envelope))
                if let audit = config.auditChannel {
                    notifications.append((audit, envelope))
                }
            }
            return true
        }
        guard fits else {
            close(
                code: CloseCode.messageTooBig,
                reason:
                    "message too large: its envelope exceeds PostgreSQL's \(Envelope.maxPayloadBytes)-byte NOTIFY limit"
            )
            return
        }
        let sender = SessionHandle(session: self, eventLoop: context!.eventLoop)
        submit(OutgoingMessage(notifications: notifications, sender: sender))
    }

    // MARK: - Flow control towards PostgreSQL

    private func submit(_ message: OutgoingMessage) {
        guard held.isEmpty else {
            held.append(message)  // keeps the order behind what is already waiting
            return
        }
        // While PostgreSQL is up but slower than the writers, they are slowed down (no more
        // reading); while it is down, messages queue up to the limit and then are refused.
        let databaseUp = server.notifier.isDatabaseUp
        switch server.notifier.submit(message, lane: id) {
        case .accepted:
            break
        case .congested:
            if databaseUp { pauseReading() }
        case .full where databaseUp:
            held.append(message)
            pauseReading()
        case .full:
            close(code: CloseCode.tryAgainLater, reason: "database unavailable")
        }
    }

    /// Stops reading from the client: TCP flow control then slows the writer down.
    private func pauseReading() {
        guard !readingPaused, let context else { return }
        readingPaused = true
        _ = context.channel.setOption(.autoRead, value: false)
        shard?.paused(self)
    }

    /// The queue to PostgreSQL drained, or the database went down: send what was held, then
    /// read again unless the queue is congested once more while PostgreSQL is up.
    func resumeReading() {
        guard readingPaused, state == .open || state == .closing, let context else { return }
        let databaseUp = server.notifier.isDatabaseUp
        while let message = held.first {
            switch server.notifier.submit(message, lane: id) {
            case .accepted:
                held.removeFirst()
            case .congested:
                held.removeFirst()
                if databaseUp { return }  // stay paused until the next relief
            case .full where databaseUp:
                return
            case .full:
                held = []
                close(code: CloseCode.tryAgainLater, reason: "database unavailable")
                return
            }
        }
        readingPaused = false
        shard?.resumed(self)
        _ = context.channel.setOption(.autoRead, value: true)
        context.read()
    }

    private func sendMetaEvent(_ event: Envelope.Event) {
        guard let meta = server.configuration.metaChannel else { return }
        let envelope = Envelope.encode(
            event: event, channel: meta, payload: grant.channels.joined(separator: ","),
            claimsPrefix: claimsPrefix, deliveredAtMicroseconds: DeliveryClock.shared.nextMicroseconds())
        guard envelope.count <= Envelope.maxPayloadBytes else {
            server.logger.warning("meta event too large for NOTIFY, not sent", metadata: ["event": "\(event.rawValue)"])
            return
        }
        server.notifier.submitEvent(OutgoingMessage(notifications: [(meta, envelope)], sender: nil), lane: id)
    }

    func rejectedByDatabase(reason: String) {
        close(code: CloseCode.policyViolation, reason: reason)
    }
}

/// Lets a database thread close the socket whose message PostgreSQL refused.
private struct SessionHandle: MessageSender {
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

extension TimeAmount {
    static func fromSeconds(_ seconds: Double) -> TimeAmount {
        .nanoseconds(Int64(seconds * 1e9))
    }
}
