import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// The only handler of a new connection: reads its one HTTP request and answers it with a
/// WebSocket upgrade, `/health`, or a static file, then leaves the pipeline (upgrade) or
/// closes the connection (everything else).
///
/// It bounds what a client may send before it is answered: request line and headers within
/// `max-header-size` (431), in `handshake-timeout` (408; a peer that sends nothing is closed
/// silently). Refusals carry a status code and a one-line reason: 400 malformed request or
/// handshake, 401 token problem, 403 authorization problem, 404 unknown path, 405 method,
/// 426 WebSocket version or plain request without `server-root`, 503 connection limit.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State {
        /// Reading the request head.
        case reading
        /// Authorized; waiting until PostgreSQL LISTENs on the socket's channels.
        case upgrading(WebSocketSession, acceptKey: String)
        case responding
        case upgraded
        case closed
    }

    let server: ServerContext
    var state = State.reading
    /// Bytes received and not yet handed on: the head while reading it, then whatever a
    /// client sent after its handshake (WebSocket frames), for the frame decoder.
    var received: ByteBuffer? = nil
    private var receivedTotal = 0
    private var timer: Scheduled<Void>? = nil
    /// Checks the head's bytes as they arrive, so garbage is refused at once, not at timeout.
    private var headBytes = RequestHead.ByteChecker()

    /// Bytes a client may send after its handshake and before the 101.
    static let maxEarlyFrameBytes = 64 * 1024

    init(server: ServerContext) {
        self.server = server
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startTimer(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        startTimer(context: context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimer()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        receivedTotal += bytes.readableBytes
        switch state {
        case .reading:
            if let problem = headBytes.check(bytes.readableBytesView) {
                refuse(.badRequest, "malformed HTTP request: \(problem)", context: context)
                return
            }
            let searchFrom = max(0, (received?.readableBytes ?? 0) - 3)
            if received == nil {
                received = bytes
            } else {
                received!.writeBuffer(&bytes)
            }
            readHead(searchingFrom: searchFrom, context: context)
        case .upgrading:
            guard (received?.readableBytes ?? 0) + bytes.readableBytes <= Self.maxEarlyFrameBytes else {
                context.close(promise: nil)
                return
            }
            if received == nil { received = bytes } else { received!.writeBuffer(&bytes) }
        case .responding, .upgraded, .closed:
            break
        }
    }

    /// Looks for the empty line that ends the head; parses and answers the request once found.
    private func readHead(searchingFrom start: Int, context: ChannelHandlerContext) {
        guard var buffer = received else { return }
        let maxBytes = server.configuration.maxHeaderSize
        let end: Int? = buffer.withUnsafeReadableBytes { bytes in
            var index = start
            while index + 3 < bytes.count {
                if bytes[index + 3] == UInt8(ascii: "\n"), bytes[index] == UInt8(ascii: "\r"),
                    bytes[index + 1] == UInt8(ascii: "\n"), bytes[index + 2] == UInt8(ascii: "\r")
                {
                    return index + 4
                }
                index += 1
            }
            return nil
        }
        guard let headLength = end else {
            if buffer.readableBytes > maxBytes {
                refuse(
                    .requestHeaderFieldsTooLarge, "request line and headers exceed \(maxBytes) bytes", context: context)
            }
            return
        }
        guard headLength <= maxBytes else {
            refuse(.requestHeaderFieldsTooLarge, "request line and headers exceed \(maxBytes) bytes", context: context)
            return
        }
        let head: RequestHead
        do {
            head = try buffer.withUnsafeReadableBytes { bytes throws(RequestHead.ParseError) in
                try RequestHead.parse(UnsafeRawBufferPointer(rebasing: bytes[0..<headLength]))
            }
        } catch {
            refuse(error.status, "malformed HTTP request: \(error.reason)", context: context)
            return
        }
        buffer.moveReaderIndex(forwardBy: headLength)
        received = buffer.readableBytes > 0 ? buffer : nil
        route(head, context: context)
    }

    private func route(_ head: RequestHead, context: ChannelHandlerContext) {
        let isHead = head.method == "HEAD"
        guard head.method == "GET" || isHead else {
            var response = HTTPResponse.text(.methodNotAllowed, "method not allowed")
            response.headers.add(name: "allow", value: "GET, HEAD")
            respond(response, includingBody: true, context: context)
            return
        }
        if let length = head.first("content-length"), length != "0" {
            refuse(.badRequest, "a GET request has no body", context: context)
            return
        }
        if head.first("transfer-encoding") != nil {
            refuse(.badRequest, "a GET request has no body", context: context)
            return
        }
        if head.hasToken("upgrade", "websocket") {
            upgrade(head, context: context)
            return
        }
        let path = head.path
        if path == "/health" {
            let report = HealthReport(
                databaseUp: server.listener.isUp, connections: server.limiter.count,
                listening: server.listener.listeningCount, queued: server.notifier.queuedCount)
            var response = report.response
            response.headers.add(name: "cache-control", value: "no-store")
            respond(response, includingBody: !isHead, context: context)
            return
        }
        guard let files = server.staticFiles else {
            respond(
                .text(.upgradeRequired, "this server speaks WebSocket: connect to /<jwt> or /<channel>/<jwt>"),
                includingBody: !isHead, context: context)
            return
        }
        guard let file = files.resolve(path) else {
            respond(.text(.notFound, "not found"), includingBody: !isHead, context: context)
            return
        }
        serveFile(file, includingBody: !isHead, context: context)
    }

    // MARK: - Answers

    /// A refused request: logged (never with its content) and answered with one line.
    func refuse(
        _ status: HTTPResponseStatus, _ reason: String, headers: [(String, String)] = [],
        context: ChannelHandlerContext
    ) {
        server.logger.info("request refused", metadata: ["status": "\(status.code)", "reason": "\(reason)"])
        var response = HTTPResponse.text(status, reason)
        for (name, value) in headers { response.headers.add(name: name, value: value) }
        respond(response, includingBody: true, context: context)
    }

    func respond(_ response: HTTPResponse, includingBody: Bool, context: ChannelHandlerContext) {
        // A request refused while its LISTEN was pending (timed out) gives its channels and
        // its connection slot back now: the upgrade will never complete.
        if case .upgrading(let session, _) = state { abandon(session) }
        state = .responding
        cancelTimer()
        let bytes = response.serialized(includingBody: includingBody, allocator: context.channel.allocator)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(bytes)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    private func serveFile(_ path: String, includingBody: Bool, context: ChannelHandlerContext) {
        state = .responding
        cancelTimer()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop) { () -> [UInt8] in
            try readWholeFile(path, limit: StaticFiles.maxFileSize).get()
        }.whenComplete { result in
            let (handler, context) = loopBound.value
            switch result {
            case .success(let bytes):
                let response = HTTPResponse(
                    status: .ok, contentType: StaticFiles.contentType(for: path), body: ByteBuffer(bytes: bytes))
                handler.respond(response, includingBody: includingBody, context: context)
            case .failure:
                handler.respond(.text(.notFound, "not found"), includingBody: includingBody, context: context)
            }
        }
    }

    // MARK: - Time limit

    private func startTimer(context: ChannelHandlerContext) {
        guard timer == nil else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: .fromSeconds(server.configuration.handshakeTimeout)) {
            let (handler, context) = loopBound.value
            handler.timedOut(context: context)
        }
    }

    func cancelTimer() {
        timer?.cancel()
        timer = nil
    }

    private func timedOut(context: ChannelHandlerContext) {
        timer = nil
        switch state {
        case .reading where receivedTotal == 0:
            server.logger.info("handshake timed out", metadata: ["bytes_received": "0"])
            context.close(promise: nil)
        case .reading, .upgrading:
            server.logger.info("handshake timed out", metadata: ["bytes_received": "\(receivedTotal)"])
            refuse(.requestTimeout, "request not completed in time", context: context)
        case .responding, .upgraded, .closed:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .upgrading(let session, _) = state {
            abandon(session)
        }
        state = .closed
        cancelTimer()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        server.logger.debug("connection error before upgrade", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
