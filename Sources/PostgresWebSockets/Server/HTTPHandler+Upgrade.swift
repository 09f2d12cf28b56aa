import COpenSSL
import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// The WebSocket handshake: checks, authorization, waiting for LISTEN, the 101.
extension HTTPHandler {
    private struct Refusal: Error {
        let status: HTTPResponseStatus
        let reason: String
        init(_ status: HTTPResponseStatus, _ reason: String) {
            self.status = status
            self.reason = reason
        }
    }

    func upgrade(_ head: RequestHead, context: ChannelHandlerContext) {
        switch authorizeUpgrade(head) {
        case .success(let (session, key)):
            beginUpgrade(session, acceptKey: key, context: context)
        case .failure(let refusal):
            let headers = refusal.status == .upgradeRequired ? [("sec-websocket-version", "13")] : []
            refuse(refusal.status, refusal.reason, headers: headers, context: context)
        }
    }

    private func authorizeUpgrade(_ head: RequestHead) -> Result<(WebSocketSession, String), Refusal> {
        guard head.method == "GET", head.minorVersion == 1 else {
            return .failure(Refusal(.badRequest, "a WebSocket handshake must use GET and HTTP/1.1"))
        }
        guard head.hasToken("connection", "upgrade") else {
            return .failure(Refusal(.badRequest, "missing Connection: Upgrade"))
        }
        let versions = head.values("sec-websocket-version")
        guard versions.count == 1, versions[0] == "13" else {
            return .failure(Refusal(.upgradeRequired, "unsupported WebSocket version: use 13"))
        }
        let keys = head.values("sec-websocket-key")
        guard keys.count == 1, Base64.decode(keys[0].utf8)?.count == 16 else {
            return .failure(Refusal(.badRequest, "missing or invalid Sec-WebSocket-Key"))
        }
        if let allowed = server.allowedOrigins, let origin = head.first("origin"),
            !allowed.contains(origin.lowercased())
        {
            return .failure(Refusal(.forbidden, "origin not allowed"))
        }

        let path = head.path
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
        guard !tokenSegment.isEmpty else { return .failure(Refusal(.unauthorized, "missing JWT")) }
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
        return .success((session, Self.acceptValue(for: String(keys[0]))))
    }

    /// Holds the 101 until PostgreSQL LISTENs on the socket's channels: once a client sees
    /// its socket open, every NOTIFY committed after that reaches it.
    private func beginUpgrade(_ session: WebSocketSession, acceptKey: String, context: ChannelHandlerContext) {
        state = .upgrading(session, acceptKey: acceptKey)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let complete: @Sendable () -> Void = {
            // A later event-loop turn: never in the middle of the read that parsed the request.
            loopBound.eventLoop.execute {
                let (handler, context) = loopBound.value
                handler.completeUpgrade(context: context)
            }
        }
        if session.readChannels.isEmpty {
            complete()
        } else {
            server.listener.acquire(session.readChannels, ready: complete)
        }
    }

    private func completeUpgrade(context: ChannelHandlerContext) {
        guard case .upgrading(let session, let acceptKey) = state else { return }
        guard context.channel.isActive else {
            abandon(session)
            return
        }
        state = .upgraded
        cancelTimer()
        do {
            let pipeline = context.pipeline.syncOperations
            context.writeAndFlush(wrapOutboundOut(Self.switchingProtocols(acceptKey: acceptKey)), promise: nil)
            let frameDecoder = ByteToMessageHandler(
                WebSocketFrameDecoder(maxFrameSize: server.configuration.maxMessageSize))
            try pipeline.addHandler(frameDecoder, position: .after(self))
            try pipeline.addHandler(session, position: .after(frameDecoder))
            // Frames the client sent before it saw the 101 go to the frame decoder first.
            if let early = received {
                received = nil
                context.fireChannelRead(NIOAny(early))
            }
            pipeline.removeHandler(context: context, promise: nil)
        } catch {
            server.logger.error("WebSocket upgrade failed", metadata: ["error": "\(error)"])
            if (try? context.pipeline.syncOperations.handler(type: WebSocketSession.self)) == nil {
                abandon(session)
            }
            context.close(promise: nil)
        }
    }

    func abandon(_ session: WebSocketSession) {
        state = .closed
        server.listener.release(session.readChannels)
        server.limiter.release()
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
