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

    enum State {
        case pending, open, closing, closed
    }

    let id: Int
    let grant: Grant
    /// Channels this socket receives notifications on (none for write-only sockets).
    let readChannels: [String]
    let server: ServerContext
    let claimsPrefix: [UInt8]
    let expiresAt: Double?
    var context: ChannelHandlerContext? = nil
    var shard: LoopShard? = nil
    var state = State.pending
    var needsFlush = false
    var lastInbound = NIODeadline.now()
    var ping = PingState.idle
    var closeDeadline: NIODeadline? = nil
    var fragments: ByteBuffer? = nil
    /// Messages read while the queue to PostgreSQL was full; submitted first when it drains.
    var held: [OutgoingMessage] = []
    var readingPaused = false

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
    func fail(code: UInt16, reason: String) {
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

}
