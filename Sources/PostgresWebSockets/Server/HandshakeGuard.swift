import Logging
import NIOCore

/// First in every new connection's pipeline, until the upgrade: bounds the bytes a client
/// may send before its request is answered (request line plus headers) and the time it
/// may take. A peer that connects and sends nothing is dropped after `handshake-timeout`.
final class HandshakeGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = ByteBuffer

    private let maxBytes: Int
    private let timeout: TimeAmount
    private let logger: Logger
    private var received = 0
    private var tripped = false
    private var timer: Scheduled<Void>? = nil

    init(maxBytes: Int, timeout: TimeAmount, logger: Logger) {
        self.maxBytes = maxBytes
        self.timeout = timeout
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startTimer(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        startTimer(context: context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    private func startTimer(context: ChannelHandlerContext) {
        guard timer == nil else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: timeout) {
            let (handler, context) = loopBound.value
            handler.timedOut(context: context)
        }
    }

    private func timedOut(context: ChannelHandlerContext) {
        guard !tripped else { return }
        tripped = true
        logger.info("handshake timed out", metadata: ["bytes_received": "\(received)"])
        if received == 0 {
            context.close(promise: nil)
        } else {
            respond(context: context, status: "408 Request Timeout", body: "request not completed in time")
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !tripped else { return }
        received += unwrapInboundIn(data).readableBytes
        if received > maxBytes {
            tripped = true
            logger.info("request head too large", metadata: ["limit_bytes": "\(maxBytes)"])
            respond(
                context: context, status: "431 Request Header Fields Too Large",
                body: "request line and headers exceed \(maxBytes) bytes")
            return
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // Once this guard answered, nothing else may write into the half-sent response.
        guard !tripped else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        context.write(data, promise: promise)
    }

    /// Written as raw bytes: the HTTP encoder may be in the middle of another response.
    private func respond(context: ChannelHandlerContext, status: String, body: String) {
        let text =
            "HTTP/1.1 \(status)\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: \(body.utf8.count + 1)\r\nconnection: close\r\n\r\n\(body)\n"
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: text))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
