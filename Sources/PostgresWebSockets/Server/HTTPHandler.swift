import COpenSSL
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// Answers the one HTTP request of a new connection: a WebSocket handshake, `/health`, or
/// a static file. Refusals happen here, before any upgrade, with a status code and a one-
/// line reason: 400 malformed handshake, 401 token problem, 403 authorization problem,
/// 404 unknown path, 405 method, 426 WebSocket version, 503 connection limit.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = ByteBuffer

    private enum State {
        case idle
        /// Authorized; waiting for the end of the request and until PostgreSQL LISTENs on
        /// the socket's channels.
        case upgrading(WebSocketSession, acceptKey: String, requestEnded: Bool, listening: Bool)
        case responding
        case upgraded
        case closed
    }

    private let server: ServerContext
    private let handshakeGuard: HandshakeGuard
    private let decoder: ByteToMessageHandler<HTTPRequestDecoder>
    private var state = State.idle

    init(server: ServerContext, handshakeGuard: HandshakeGuard, decoder: ByteToMessageHandler<HTTPRequestDecoder>) {
        self.server = server
        self.handshakeGuard = handshakeGuard
        self.decoder = decoder
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (state, unwrapInboundIn(data)) {
        case (.idle, .head(let head)):
            route(head, context: context)
        case (.upgrading(let session, let key, false, let listening), .end):
            state = .upgrading(session, acceptKey: key, requestEnded: true, listening: listening)
            scheduleUpgradeIfReady(context: context)
        default:
            break
        }
    }

    private func route(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard head.method == .GET || head.method == .HEAD else {
            var response = HTTPResponse.text(.methodNotAllowed, "method not allowed")
            response.headers.add(name: "allow", value: "GET, HEAD")
            respond(response, to: head, context: context)
            return
        }
        if Self.headerHasToken(head.headers, "upgrade", "websocket") {
            switch authorizeUpgrade(head, path: path) {
            case .success(let (session, key)):
                beginUpgrade(session, acceptKey: key, context: context)
            case .failure(let refusal):
                server.logger.info(
                    "handshake refused", metadata: ["status": "\(refusal.status.code)", "reason": "\(refusal.reason)"])
                var response = HTTPResponse.text(refusal.status, refusal.reason)
                if refusal.status == .upgradeRequired {
                    response.headers.add(name: "sec-websocket-version", value: "13")
                }
                respond(response, to: head, context: context)
            }
            return
        }
        if path == "/health" {
            let report = HealthReport(
                databaseUp: server.listener.isUp, connections: server.limiter.count,
                listening: server.listener.listeningCount, queued: server.notifier.queuedCount)
            var response = report.response
            response.headers.add(name: "cache-control", value: "no-store")
            respond(response, to: head, context: context)
            return
        }
        guard let files = server.staticFiles else {
            respond(
                .text(.upgradeRequired, "this server speaks WebSocket: connect to /<jwt> or /<channel>/<jwt>"),
                to: head, context: context)
            return
        }
        guard let file = files.resolve(path) else {
            respond(.text(.notFound, "not found"), to: head, context: context)
            return
        }
        serveFile(file, head: head, context: context)
    }

    // MARK: - WebSocket handshake

    private struct Refusal: Error {
        let status: HTTPResponseStatus
        let reason: String
        init(_ status: HTTPResponseStatus, _ reason: String) {
            self.status = status
            self.reason = reason
        }
    }

    private func authorizeUpgrade(_ head: HTTPRequestHead, path: Substring) -> Result<
        (WebSocketSession, String), Refusal
    > {
        guard head.method == .GET else { return .failure(Refusal(.badRequest, "a WebSocket handshake must use GET")) }
        guard Self.headerHasToken(head.headers, "connection", "upgrade") else {
            return .failure(Refusal(.badRequest, "missing Connection: Upgrade"))
        }
        let versions = head.headers["sec-websocket-version"]
        guard versions.count == 1, versions[0] == "13" else {
            return .failure(Refusal(.upgradeRequired, "unsupported WebSocket version: use 13"))
        }
        let keys = head.headers["sec-websocket-key"]
        guard keys.count == 1, let key = keys.first, Base64.decode(key)?.count == 16 else {
            return .failure(Refusal(.badRequest, "missing or invalid Sec-WebSocket-Key"))
        }
        if let allowed = server.allowedOrigins, let origin = head.headers.first(name: "origin"),
            !allowed.contains(origin.lowercased())
        {
            return .failure(Refusal(.forbidden, "origin not allowed"))
        }

        let requestedChannel: String?
        let tokenSegment: Substring
        let segments = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        switch segments.count {
        case 1:
            requestedChannel = nil
            tokenSegment = segments[0]
        case 2:
            guard let bytes = percentDecode(segments[0]) else {
                return .failure(Refusal(.forbidden, "bad channel name: invalid percent-encoding"))
            }
            guard let name = String(validating: bytes, as: UTF8.self) else {
                return .failure(Refusal(.forbidden, "bad channel name: not UTF-8"))
            }
            requestedChannel = name
            tokenSegment = segments[1]
        default:
            return .failure(Refusal(.notFound, "expected /<jwt> or /<channel>/<jwt>"))
        }
        guard path.hasPrefix("/"), !tokenSegment.isEmpty else { return .failure(Refusal(.unauthorized, "missing JWT")) }
        guard let tokenBytes = percentDecode(tokenSegment), let token = String(validating: tokenBytes, as: UTF8.self)
        else {
            return .failure(Refusal(.unauthorized, "malformed JWT"))
        }

        let verified: VerifiedToken
        do {
            verified = try server.verifier.verify(Substring(token), now: DeliveryClock.now())
        } catch {
            return .failure(Refusal(.unauthorized, error.reason))
        }
        let grant: Grant
        do {
            grant = try Grant.authorize(claims: verified.claims, requestedChannel: requestedChannel)
        } catch {
            return .failure(Refusal(.forbidden, error.reason))
        }
        guard server.limiter.reserve() else {
            return .failure(Refusal(.serviceUnavailable, "server at its connection limit (\(server.limiter.limit))"))
        }
        let session = WebSocketSession(id: server.makeSessionID(), grant: grant, token: verified, server: server)
        return .success((session, Self.acceptValue(for: key)))
    }

    /// Holds the 101 until PostgreSQL LISTENs on the socket's channels: once a client sees
    /// its socket open, every NOTIFY committed after that reaches it.
    private func beginUpgrade(_ session: WebSocketSession, acceptKey: String, context: ChannelHandlerContext) {
        let needsListen = !session.readChannels.isEmpty
        state = .upgrading(session, acceptKey: acceptKey, requestEnded: false, listening: !needsListen)
        guard needsListen else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        server.listener.acquire(session.readChannels) {
            loopBound.eventLoop.execute {
                let (handler, context) = loopBound.value
                guard case .upgrading(let session, let key, let ended, false) = handler.state else { return }
                handler.state = .upgrading(session, acceptKey: key, requestEnded: ended, listening: true)
                handler.scheduleUpgradeIfReady(context: context)
            }
        }
    }

    /// The pipeline changes in a later event-loop turn: the HTTP decoder may still be in the
    /// middle of handing over the request it just parsed.
    private func scheduleUpgradeIfReady(context: ChannelHandlerContext) {
        guard case .upgrading(_, _, true, true) = state else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = loopBound.value
            handler.completeUpgrade(context: context)
        }
    }

    private func completeUpgrade(context: ChannelHandlerContext) {
        guard case .upgrading(let session, let acceptKey, true, true) = state else {
            return
        }
        guard context.channel.isActive else {
            abandon(session)
            return
        }
        state = .upgraded
        do {
            let pipeline = context.pipeline.syncOperations
            context.writeAndFlush(wrapOutboundOut(Self.switchingProtocols(acceptKey: acceptKey)), promise: nil)
            let frameDecoder = ByteToMessageHandler(
                WebSocketFrameDecoder(maxFrameSize: server.configuration.maxMessageSize))
            try pipeline.addHandler(frameDecoder, position: .after(self))
            try pipeline.addHandler(session, position: .after(frameDecoder))
            pipeline.removeHandler(handshakeGuard, promise: nil)
            pipeline.removeHandler(context: context, promise: nil)
            // Last: the HTTP decoder hands bytes it already read past the request to the
            // frame decoder, which now directly follows it.
            pipeline.removeHandler(decoder, promise: nil)
        } catch {
            server.logger.error("WebSocket upgrade failed", metadata: ["error": "\(error)"])
            if (try? context.pipeline.syncOperations.handler(type: WebSocketSession.self)) == nil {
                abandon(session)
            }
            context.close(promise: nil)
        }
    }

    private func abandon(_ session: WebSocketSession) {
        state = .closed
        server.listener.release(session.readChannels)
        server.limiter.release()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .upgrading(let session, _, _, _) = state {
            abandon(session)
        }
        state = .closed
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch state {
        case .idle:
            let status: HTTPResponseStatus =
                (error as? HTTPParserError) == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
            server.logger.info("malformed HTTP request", metadata: ["error": "\(error)"])
            respond(.text(status, "malformed HTTP request"), to: nil, context: context)
        case .upgrading, .responding, .upgraded, .closed:
            context.close(promise: nil)
        }
    }

    // MARK: - Responses

    private func respond(_ response: HTTPResponse, to request: HTTPRequestHead?, context: ChannelHandlerContext) {
        state = .responding
        let bytes = response.serialized(includingBody: request?.method != .HEAD, allocator: context.channel.allocator)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(bytes)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    private func serveFile(_ path: String, head: HTTPRequestHead, context: ChannelHandlerContext) {
        state = .responding
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop) { () -> [UInt8] in
            try readWholeFile(path, limit: StaticFiles.maxFileSize).get()
        }.whenComplete { result in
            let (handler, context) = loopBound.value
            switch result {
            case .success(let bytes):
                let response = HTTPResponse(
                    status: .ok, contentType: StaticFiles.contentType(for: path), body: ByteBuffer(bytes: bytes))
                handler.respond(response, to: head, context: context)
            case .failure:
                handler.respond(.text(.notFound, "not found"), to: head, context: context)
            }
        }
    }

    // MARK: - Helpers

    /// Whether a comma-separated header (Connection, Upgrade) lists `token` (lowercase
    /// ASCII), ignoring case. Runs on every handshake, so it allocates nothing.
    static func headerHasToken(_ headers: HTTPHeaders, _ name: String, _ token: String) -> Bool {
        for (field, value) in headers where equalsIgnoringASCIICase(field.utf8, name.utf8) {
            for item in value.utf8.split(separator: UInt8(ascii: ",")) {
                let trimmed = item.drop(while: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") })
                var end = trimmed.endIndex
                while end > trimmed.startIndex,
                    trimmed[trimmed.index(before: end)] == UInt8(ascii: " ")
                        || trimmed[trimmed.index(before: end)] == UInt8(ascii: "\t")
                {
                    end = trimmed.index(before: end)
                }
                if equalsIgnoringASCIICase(trimmed[..<end], token.utf8) { return true }
            }
        }
        return false
    }

    private static func equalsIgnoringASCIICase(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        return zip(a, b).allSatisfy { x, y in
            x == y || (x | 0x20 == y | 0x20 && (x | 0x20) >= UInt8(ascii: "a") && (x | 0x20) <= UInt8(ascii: "z"))
        }
    }

    static func switchingProtocols(acceptKey: String) -> ByteBuffer {
        ByteBuffer(
            string:
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: \(acceptKey)\r\n\r\n"
        )
    }

    /// Sec-WebSocket-Accept: base64(SHA-1(key + GUID)), RFC 6455 4.2.2.
    static func acceptValue(for key: String) -> String {
        let input = Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = EVP_Digest(input, input.count, &digest, &length, EVP_sha1(), nil)
        precondition(ok == 1, "libcrypto SHA-1 failed")
        return Base64.encode(digest[0..<Int(length)])
    }
}
