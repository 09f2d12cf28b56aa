import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// The only handler of a new connection: reads its one HTTP request and answers it with a
/// WebSocket upgrade, `/health`, or a static file, then leaves the pipeline (upgrade) or
/// closes the connection (everything else). What to do when is decided by its
/// `HTTPConnectionStateMachine`; the answers to refusals by `Refusal`.
///
/// The reading and the upgrade are written here rather than with NIO's HTTP pipeline: measured
/// against `configureUpgradableHTTPServerPipeline` + `NIOTypedWebSocketServerUpgrader` (NIO
/// 2.101.3, same authorization, admission and LISTEN-gated 101), NIO's path costs 232 vs 140
/// mallocs and 209 vs 116 Swift allocations per handshake (uprobe counts, 2,000 handshakes),
/// 1.34× the CPU per handshake (189 vs 141 µs, median of 5 `make bench` connections runs) and
/// 0.28 KiB more per idle socket (its `WebSocketFrameEncoder` cannot be removed).
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// An authorized upgrade (or event stream) waiting for its LISTEN.
    struct PendingUpgrade {
        let authorized: Handshake.Authorized
        let admission: Admission
        /// An event stream's `Last-Event-ID`.
        var lastEventID: String? = nil
    }

    private let server: ServerContext
    private var machine: HTTPConnectionStateMachine<PendingUpgrade>
    private var timer: Scheduled<Void>? = nil
    private var logger: Logger
    /// Set once the request turned out to be a handshake: its refusal counts as the
    /// handshake's outcome.
    private var isHandshake = false

    init(server: ServerContext) {
        self.server = server
        self.machine = HTTPConnectionStateMachine(maxHeadBytes: server.configuration.limits.maxHeaderSize)
        self.logger = server.logger
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
        switch machine.received(unwrapInboundIn(data)) {
        case .none:
            break
        case .route(let head):
            route(head, context: context)
        case .refuse(let refusal):
            refuse(refusal, context: context)
        case .closeConnection:
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .abandon(let pending) = machine.closed() { pending.admission.giveBack() }
        cancelTimer()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.log(.debug, "connection error before upgrade", [.error: "\(error)"])
        context.close(promise: nil)
    }

    // MARK: - Routing

    private func route(_ head: RequestHead, context: ChannelHandlerContext) {
        let isHead = head.method == "HEAD"
        guard head.method == "GET" || isHead else {
            return refuse(Refusal(.methodNotAllowed, "method not allowed"), context: context)
        }
        if let length = head.first("content-length"), length != "0" {
            return refuse(Refusal(.badRequest, "a GET request has no body"), context: context)
        }
        if head.first("transfer-encoding") != nil {
            return refuse(Refusal(.badRequest, "a GET request has no body"), context: context)
        }
        if head.hasToken("upgrade", "websocket") {
            return upgrade(head, context: context)
        }
        if !isHead, head.hasToken("accept", "text/event-stream") {
            return eventStream(head, context: context)
        }
        let path = head.path
        if path == "/health" {
            var response = server.healthReport().response
            response.headers.add(name: "cache-control", value: "no-store")
            return respond(response, includingBody: !isHead, context: context)
        }
        // The operators' paths live on the metrics listener only; here they are unknown
        // whether or not a banner answers every other path.
        if path == "/metrics" || path == "/channels" || path.hasPrefix("/channels/") {
            return respond(Refusal(.notFound, "not found").response, includingBody: !isHead, context: context)
        }
        guard let files = server.staticFiles else {
            // Load-balancer probes of upstream deployments expect 200 here.
            return respond(
                .text(.ok, "postgres-websockets: open a WebSocket on /<jwt> or /<channel>/<jwt>"),
                includingBody: !isHead, context: context)
        }
        guard let file = files.resolve(path) else {
            return respond(Refusal(.notFound, "not found").response, includingBody: !isHead, context: context)
        }
        serveFile(file, includingBody: !isHead, context: context)
    }

    // MARK: - The upgrade

    private func upgrade(_ head: RequestHead, context: ChannelHandlerContext) {
        isHandshake = true
        switch server.handshake.authorize(head, now: WallClock.seconds()) {
        case .success(let authorized): admit(authorized, lastEventID: nil, context: context)
        case .failure(let refusal): refuse(refusal, context: context)
        }
    }

    private func eventStream(_ head: RequestHead, context: ChannelHandlerContext) {
        isHandshake = true
        switch server.handshake.authorizeEventStream(head, now: WallClock.seconds()) {
        case .success(let authorized):
            admit(authorized, lastEventID: head.first("last-event-id").map(String.init), context: context)
        case .failure(let refusal):
            refuse(refusal, context: context)
        }
    }

    /// Takes the connection slot and holds the socket's channels; answers once PostgreSQL
    /// LISTENs on them.
    private func admit(_ authorized: Handshake.Authorized, lastEventID: String?, context: ChannelHandlerContext) {
        // Holds the 101 until PostgreSQL LISTENs on the socket's channels: once a client sees
        // its socket open, every NOTIFY committed after that reaches it.
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let shard = server.hub.shard(on: context.eventLoop)
        guard
            let admission = Admission(
                readChannels: authorized.readChannels, shard: shard, slots: server.slots,
                whenListening: {
                    // A later event-loop turn: never in the middle of the read that parsed the request.
                    loopBound.eventLoop.execute {
                        let (handler, context) = loopBound.value
                        handler.listening(context: context)
                    }
                })
        else {
            return refuse(
                Refusal(.atCapacity, "server at its connection limit (\(server.slots.limit))"), context: context)
        }
        machine.awaitListen(PendingUpgrade(authorized: authorized, admission: admission, lastEventID: lastEventID))
    }

    private func listening(context: ChannelHandlerContext) {
        let pending: PendingUpgrade
        let early: ByteBuffer?
        switch machine.listening(connectionIsActive: context.channel.isActive) {
        case .none:
            return
        case .abandon(let abandoned):
            abandoned.admission.giveBack()
            return
        case .upgrade(let upgrade, let bytes):
            (pending, early) = (upgrade, bytes)
        }
        cancelTimer()
        server.handshakeOutcomes.accepted()
        if pending.authorized.encoding == .sse {
            return startEventStream(pending, context: context)
        }
        let session = server.makeSession(pending, shard: server.hub.shard(on: context.eventLoop))
        do {
            let pipeline = context.pipeline.syncOperations
            let response = Handshake.switchingProtocols(
                acceptKey: pending.authorized.acceptKey, subprotocol: pending.authorized.subprotocol)
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response)), promise: nil)
            let allowance = pending.authorized.encoding == .v1 ? V1Protocol.frameAllowance : 0
            let frameDecoder = ByteToMessageHandler(
                WebSocketFrameDecoder(maxFrameSize: server.configuration.limits.maxMessageSize + allowance))
            try pipeline.addHandler(frameDecoder, position: .after(self))
            try pipeline.addHandler(session, position: .after(frameDecoder))
            // Frames the client sent before it saw the 101 go to the frame decoder first.
            if let early { context.fireChannelRead(NIOAny(early)) }
            pipeline.removeHandler(context: context, promise: nil)
        } catch {
            logger.log(.error, "WebSocket upgrade failed", [.error: "\(error)"])
            // The session gives the admission back once it was added; before that, nobody did.
            if (try? context.pipeline.syncOperations.handler(type: WebSocketSession.self)) == nil {
                pending.admission.giveBack()
            }
            context.close(promise: nil)
        }
    }

    private func startEventStream(_ pending: PendingUpgrade, context: ChannelHandlerContext) {
        let stream = server.makeEventStream(pending, shard: server.hub.shard(on: context.eventLoop))
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: EventStreamSession.responseHead)), promise: nil)
        do {
            let pipeline = context.pipeline.syncOperations
            try pipeline.addHandler(stream, position: .after(self))
            pipeline.removeHandler(context: context, promise: nil)
        } catch {
            logger.log(.error, "event stream failed to start", [.error: "\(error)"])
            if (try? context.pipeline.syncOperations.handler(type: EventStreamSession.self)) == nil {
                pending.admission.giveBack()
            }
            context.close(promise: nil)
        }
    }

    // MARK: - Answers

    /// A refused request: logged (never with its content) and answered with one line.
    private func refuse(_ refusal: Refusal, context: ChannelHandlerContext) {
        logger.log(.info, "request refused", [.httpStatus: "\(refusal.status.code)", .refusal: "\(refusal.reason)"])
        if isHandshake { server.handshakeOutcomes.refused(refusal.code) }
        respond(refusal.response, includingBody: true, context: context)
    }

    private func respond(_ response: HTTPResponse, includingBody: Bool, context: ChannelHandlerContext) {
        // A request refused while its LISTEN was pending (timed out) gives its channels and
        // its connection slot back now: the upgrade will never complete.
        if case .abandon(let pending) = machine.responding() { pending.admission.giveBack() }
        cancelTimer()
        let bytes = response.serialized(includingBody: includingBody, allocator: context.channel.allocator)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(bytes)).whenComplete { _ in
            Self.closeAfterAnswer(channel)
        }
    }

    /// How long the rest of a refused request is read and dropped after the answer.
    static let lingerAfterAnswer = TimeAmount.seconds(1)

    /// Closing a socket that still holds unread request bytes makes the kernel send a reset,
    /// and a reset can destroy the answer before the client reads it (a request refused before
    /// its end was read, say). So the write side closes first, the client reads the answer
    /// and its end, and what else it sends is read and dropped until it closes, or for at most
    /// `lingerAfterAnswer` (the lingering close of nginx and Apache).
    private static func closeAfterAnswer(_ channel: any Channel) {
        let outputClosed = channel.eventLoop.makePromise(of: Void.self)
        channel.close(mode: .output, promise: outputClosed)
        outputClosed.futureResult.whenComplete { result in
            guard case .success = result else {
                channel.close(promise: nil)
                return
            }
            channel.eventLoop.scheduleTask(in: lingerAfterAnswer) { channel.close(promise: nil) }
        }
    }

    private func serveFile(_ path: String, includingBody: Bool, context: ChannelHandlerContext) {
        _ = machine.responding()
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
                handler.respond(
                    Refusal(.notFound, "not found").response, includingBody: includingBody, context: context)
            }
        }
    }

    // MARK: - Time limit

    private func startTimer(context: ChannelHandlerContext) {
        guard timer == nil else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: server.configuration.limits.handshakeTimeout) {
            let (handler, context) = loopBound.value
            handler.timedOut(context: context)
        }
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
    }

    private func timedOut(context: ChannelHandlerContext) {
        timer = nil
        let received = machine.bytesReceived
        switch machine.timedOut() {
        case .none:
            break
        case .closeSilently:
            logger.log(.info, "handshake timed out", [.bytesReceived: "0"])
            context.close(promise: nil)
        case .refuse(let refusal, let pending):
            pending?.admission.giveBack()
            logger.log(.info, "handshake timed out", [.bytesReceived: "\(received)"])
            refuse(refusal, context: context)
        }
    }
}
