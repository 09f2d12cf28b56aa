import COpenSSL
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOWebSocket
import PostgresWebSockets

/// What a WebSocket client observes, in order.
public enum WebSocketEvent: Sendable, Equatable {
    case text(String)
    case binary([UInt8])
    case ping([UInt8])
    case pong([UInt8])
    case close(code: UInt16?, reason: String)
    /// The TCP connection ended.
    case disconnected
}

/// The server's answer to a handshake that was not upgraded.
public struct HTTPRefusal: Sendable, Error, CustomStringConvertible {
    public let status: Int
    public let headers: [String: String]
    public let body: String
    public var description: String { "HTTP \(status): \(body)" }
}

/// A real WebSocket client over a real TCP socket, written for tests: it can send what a
/// browser would never send (unmasked, binary, invalid UTF-8, fragmented, oversized) and
/// reports every frame, close code and disconnect it sees.
public final class WebSocketClient: Sendable {
    public static let defaultGroup = MultiThreadedEventLoopGroup.singleton

    private let channel: any Channel
    private let events: EventQueue<WebSocketEvent>
    /// The headers of the server's 101, names lowercased.
    public let responseHeaders: [String: String]

    private init(channel: any Channel, events: EventQueue<WebSocketEvent>, responseHeaders: [String: String]) {
        self.channel = channel
        self.events = events
        self.responseHeaders = responseHeaders
    }

    public enum Outcome: Sendable {
        case upgraded(WebSocketClient)
        case refused(HTTPRefusal)
    }

    /// `wss://`: the connection speaks TLS, verifying the server's certificate against the
    /// given roots and its name against `serverHostname` (sent as SNI too), as a browser does.
    public struct TLS: Sendable {
        public let context: NIOSSLContext
        public let serverHostname: String

        public init(trusting rootPEM: [UInt8], serverHostname: String = "localhost") throws {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = .fullVerification
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(rootPEM))
            context = try NIOSSLContext(configuration: configuration)
            self.serverHostname = serverHostname
        }
    }

    /// Opens a socket; returns the refusal when the server answers with anything but 101.
    /// With `tls`, over TLS (a failed TLS handshake is a refusal with status 0 that names it).
    public static func open(
        host: String = "127.0.0.1", port: Int, path: String,
        headers: [(String, String)] = [], rawRequest: String? = nil, answerPings: Bool = true,
        tls: TLS? = nil, group: any EventLoopGroup = defaultGroup
    ) async throws -> Outcome {
        let events = EventQueue<WebSocketEvent>()
        let key = Base64.encode((0..<16).map { _ in UInt8.random(in: 0...255) })
        let handshake = HandshakeState()
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(runsUnderSanitizer ? .seconds(60) : .seconds(10))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls.context, serverHostname: tls.serverHostname))
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        ClientHandler(
                            expectedAccept: Self.accept(for: key), events: events, handshake: handshake,
                            answerPings: answerPings))
                }
            }
            .connect(host: host, port: port).get()
        var request =
            rawRequest
            ?? "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
        if rawRequest == nil {
            for (name, value) in headers { request += "\(name): \(value)\r\n" }
            request += "\r\n"
        }
        do {
            try await channel.writeAndFlush(ByteBuffer(string: request))
        } catch {
            // The connection closed first (a TLS handshake that failed, say): the handshake
            // result says how, once the channel is inactive.
        }
        switch try await handshake.result.next(timeout: 15) {
        case .success(let headers):
            return .upgraded(WebSocketClient(channel: channel, events: events, responseHeaders: headers))
        case .failure(let refusal):
            try? await channel.close()
            return .refused(refusal)
        }
    }

    /// Opens a socket that the test expects to be accepted.
    public static func connect(
        host: String = "127.0.0.1", port: Int, path: String, headers: [(String, String)] = [], answerPings: Bool = true,
        tls: TLS? = nil
    ) async throws -> WebSocketClient {
        switch try await open(
            host: host, port: port, path: path, headers: headers, answerPings: answerPings, tls: tls)
        {
        case .upgraded(let client): return client
        case .refused(let refusal): throw refusal
        }
    }

    // MARK: - Receiving

    /// The next event, failing after `timeout` seconds. Pings are answered by the client
    /// and still reported.
    public func next(timeout: Double = 10) async throws -> WebSocketEvent {
        try await events.next(timeout: timeout)
    }

    /// The next text message, skipping pings and pongs; fails on anything else, and after
    /// `timeout` seconds in all (a server that pings keeps no wait alive forever).
    public func nextText(timeout: Double = 10) async throws -> String {
        let deadline = Deadline(seconds: timeout)
        while true {
            switch try await next(timeout: try deadline.remaining()) {
            case .text(let text): return text
            case .ping, .pong: continue
            case let other: throw UnexpectedEvent(event: other)
            }
        }
    }

    /// The close frame the server sends next (skipping messages and pings), then waits
    /// for the disconnect.
    public func nextClose(timeout: Double = 10) async throws -> (code: UInt16?, reason: String) {
        let deadline = Deadline(seconds: timeout)
        while true {
            switch try await next(timeout: try deadline.remaining()) {
            case .close(let code, let reason): return (code, reason)
            case .disconnected: throw UnexpectedEvent(event: .disconnected)
            default: continue
            }
        }
    }

    /// Fails unless nothing arrives for `seconds`. For asserting absence only.
    public func expectSilence(for seconds: Double) async throws {
        if let event = await events.nextIfAny(within: seconds) {
            throw UnexpectedEvent(event: event)
        }
    }

    public struct UnexpectedEvent: Error, CustomStringConvertible {
        public let event: WebSocketEvent
        public init(event: WebSocketEvent) { self.event = event }
        public var description: String { "unexpected \(event)" }
    }

    // MARK: - Sending

    public func send(text: String) async throws {
        try await send(opcode: .text, payload: Array(text.utf8))
    }

    /// Sends every text as its own frame, all in one write: the server gets them back to back
    /// however busy this process is.
    public func send(texts: [String]) async throws {
        var frames = ByteBuffer()
        for text in texts {
            var frame = Self.encodeFrame(opcode: .text, payload: Array(text.utf8), fin: true, masked: true)
            frames.writeBuffer(&frame)
        }
        try await channel.writeAndFlush(frames)
    }

    public func send(binary: [UInt8]) async throws {
        try await send(opcode: .binary, payload: binary)
    }

    public func ping(_ payload: [UInt8] = []) async throws {
        try await send(opcode: .ping, payload: payload)
    }

    public func close(code: UInt16 = 1000, reason: String = "") async throws {
        var payload = withUnsafeBytes(of: code.bigEndian) { Array($0) }
        payload += Array(reason.utf8)
        let channel = self.channel
        try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.handler(type: ClientHandler.self).sentClose = true
        }.get()
        try await send(opcode: .connectionClose, payload: payload)
    }

    /// Sends one frame as given: masked like a browser's unless `masked` is false.
    public func send(opcode: WebSocketOpcode, payload: [UInt8], fin: Bool = true, masked: Bool = true) async throws {
        try await channel.writeAndFlush(Self.encodeFrame(opcode: opcode, payload: payload, fin: fin, masked: masked))
    }

    public func sendRaw(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    /// Stops reading from the socket, so the server's output piles up in the kernel and then
    /// in the server: a slow consumer.
    public func pauseReading() async throws {
        try await channel.setOption(.autoRead, value: false).get()
    }

    public func resumeReading() async throws {
        try await channel.setOption(.autoRead, value: true).get()
        channel.read()
    }

    /// Reads at most `bytesPerSecond` on average, from now on: a reader on a slow link that
    /// keeps up with a steady stream but not with a burst.
    public func limitReading(bytesPerSecond: Int) async throws {
        let channel = self.channel
        try await channel.eventLoop.submit {
            guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
            try options.setOption(.autoRead, value: false)
            try options.setOption(.maxMessagesPerRead, value: 1)
            try options.setOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 16 * 1024))
            try channel.pipeline.syncOperations.addHandler(
                ReadRateLimiter(bytesPerSecond: Double(bytesPerSecond)), position: .first)
        }.get()
    }

    public func disconnect() async {
        try? await channel.close()
    }

    /// The certificate the server presented, for a socket opened with `tls` (verified by then).
    public func peerCertificate() async throws -> NIOSSLCertificate? {
        let channel = self.channel
        return try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self).peerCertificate
        }.get()
    }

    static func encodeFrame(opcode: WebSocketOpcode, payload: [UInt8], fin: Bool, masked: Bool) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger((fin ? 0x80 : 0) | UInt8(webSocketOpcode: opcode))
        let maskBit: UInt8 = masked ? 0x80 : 0
        switch payload.count {
        case 0...125: buffer.writeInteger(maskBit | UInt8(payload.count))
        case 126...0xFFFF:
            buffer.writeInteger(maskBit | 126)
            buffer.writeInteger(UInt16(payload.count))
        default:
            buffer.writeInteger(maskBit | 127)
            buffer.writeInteger(UInt64(payload.count))
        }
        if masked {
            let key = (0..<4).map { _ in UInt8.random(in: 0...255) }
            buffer.writeBytes(key)
            buffer.writeBytes(payload.enumerated().map { $0.element ^ key[$0.offset % 4] })
        } else {
            buffer.writeBytes(payload)
        }
        return buffer
    }

    /// Sec-WebSocket-Accept as a client expects it: base64(SHA-1(key + GUID)), RFC 6455 4.2.2.
    /// Written apart from the server's own, so a mistake there cannot agree with itself here.
    public static func accept(for key: String) -> String {
        let input = Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)
        var digest = [UInt8](repeating: 0, count: 64)
        var length: UInt32 = 0
        _ = EVP_Digest(input, input.count, &digest, &length, EVP_sha1(), nil)
        return Base64.encode(digest[0..<Int(length)])
    }
}

/// Parses the server's bytes: first the HTTP response, then frames.
/// Asks for the next read only while the reader's budget allows: tokens accrue at the rate,
/// every read spends what it brought.
private final class ReadRateLimiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let rate: Double
    private var tokens = 0.0
    private var timer: RepeatedTask? = nil

    init(bytesPerSecond: Double) {
        rate = bytesPerSecond
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let tick = TimeAmount.milliseconds(10)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in
            let (limiter, context) = loopBound.value
            // At most a twentieth of a second's worth saved up: no bursts after a pause.
            limiter.tokens = min(limiter.tokens + limiter.rate / 100, limiter.rate / 20)
            if limiter.tokens > 0 { context.read() }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        tokens -= Double(unwrapInboundIn(data).readableBytes)
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        context.fireChannelInactive()
    }
}

private final class ClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Phase { case response, frames, refused(status: Int, headers: [String: String]) }

    private let expectedAccept: String
    private let events: EventQueue<WebSocketEvent>
    private let handshake: HandshakeState
    private let answerPings: Bool
    private var phase = Phase.response
    private var buffer = ByteBuffer()
    private var fragments: (opcode: WebSocketOpcode, data: [UInt8])? = nil
    /// Why the connection failed, when it did (a TLS handshake that failed, say).
    private var failure: (any Error)? = nil
    /// Set once a close frame went out, by `close(code:)` or in answer to the server's.
    var sentClose = false

    init(expectedAccept: String, events: EventQueue<WebSocketEvent>, handshake: HandshakeState, answerPings: Bool) {
        self.expectedAccept = expectedAccept
        self.events = events
        self.handshake = handshake
        self.answerPings = answerPings
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        process(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch phase {
        case .response:
            let why = failure.map { ": \($0)" } ?? ""
            handshake.result.push(
                .failure(HTTPRefusal(status: 0, headers: [:], body: "connection closed before a response\(why)")))
        case .refused(let status, let headers):
            handshake.result.push(
                .failure(
                    HTTPRefusal(
                        status: status, headers: headers, body: buffer.readString(length: buffer.readableBytes) ?? "")))
        case .frames:
            events.push(.disconnected)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if failure == nil { failure = error }
        context.close(promise: nil)
    }

    private func process(context: ChannelHandlerContext) {
        if case .response = phase {
            guard let end = buffer.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            let headLength = end.upperBound - buffer.readableBytesView.startIndex
            let head = buffer.readString(length: headLength) ?? ""
            let lines = head.components(separatedBy: "\r\n")
            let status = lines.first.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
            var headers: [String: String] = [:]
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                    in: .whitespaces)
            }
            if status == 101, headers["sec-websocket-accept"] == expectedAccept {
                phase = .frames
                handshake.result.push(.success(headers))
            } else if status == 101 {
                phase = .refused(status: 0, headers: headers)
                context.close(promise: nil)
                return
            } else {
                phase = .refused(status: status, headers: headers)
                return  // the body is complete when the server closes
            }
        }
        guard case .frames = phase else { return }
        while let frame = parseFrame() {
            handle(frame, context: context)
        }
    }

    private func parseFrame() -> (fin: Bool, opcode: WebSocketOpcode, payload: [UInt8])? {
        let view = buffer.readableBytesView
        guard view.count >= 2 else { return nil }
        let first = view[view.startIndex]
        let second = view[view.startIndex + 1]
        var length = Int(second & 0x7F)
        var offset = 2
        if length == 126 {
            guard view.count >= 4 else { return nil }
            length = Int(buffer.getInteger(at: buffer.readerIndex + 2, as: UInt16.self)!)
            offset = 4
        } else if length == 127 {
            guard view.count >= 10 else { return nil }
            length = Int(buffer.getInteger(at: buffer.readerIndex + 2, as: UInt64.self)!)
            offset = 10
        }
        let masked = second & 0x80 != 0
        var mask: [UInt8] = []
        if masked {
            guard view.count >= offset + 4 else { return nil }
            mask = buffer.getBytes(at: buffer.readerIndex + offset, length: 4)!
            offset += 4
        }
        guard view.count >= offset + length else { return nil }
        buffer.moveReaderIndex(forwardBy: offset)
        var payload = buffer.readBytes(length: length)!
        if masked { payload = payload.enumerated().map { $0.element ^ mask[$0.offset % 4] } }
        buffer.discardReadBytes()
        return (first & 0x80 != 0, WebSocketOpcode(encodedWebSocketOpcode: first & 0x0F) ?? .connectionClose, payload)
    }

    private func handle(_ frame: (fin: Bool, opcode: WebSocketOpcode, payload: [UInt8]), context: ChannelHandlerContext)
    {
        switch frame.opcode {
        case .ping:
            events.push(.ping(frame.payload))
            guard answerPings else { return }
            context.writeAndFlush(
                wrapOutboundOut(
                    WebSocketClient.encodeFrame(opcode: .pong, payload: frame.payload, fin: true, masked: true)),
                promise: nil)
        case .pong:
            events.push(.pong(frame.payload))
        case .connectionClose:
            let code = frame.payload.count >= 2 ? UInt16(frame.payload[0]) << 8 | UInt16(frame.payload[1]) : nil
            let reason = frame.payload.count > 2 ? String(decoding: frame.payload[2...], as: UTF8.self) : ""
            events.push(.close(code: code, reason: reason))
            // Like a browser: answer the close frame with one carrying the same code.
            if !sentClose {
                sentClose = true
                context.writeAndFlush(
                    wrapOutboundOut(
                        WebSocketClient.encodeFrame(
                            opcode: .connectionClose, payload: Array(frame.payload.prefix(2)), fin: true, masked: true)),
                    promise: nil)
            }
        case .continuation:
            guard var pending = fragments else { return }
            pending.data += frame.payload
            if frame.fin {
                fragments = nil
                deliver(opcode: pending.opcode, payload: pending.data)
            } else {
                fragments = pending
            }
        default:
            if frame.fin {
                deliver(opcode: frame.opcode, payload: frame.payload)
            } else {
                fragments = (frame.opcode, frame.payload)
            }
        }
    }

    private func deliver(opcode: WebSocketOpcode, payload: [UInt8]) {
        if opcode == .text {
            events.push(.text(String(decoding: payload, as: UTF8.self)))
        } else {
            events.push(.binary(payload))
        }
    }
}

private final class HandshakeState: Sendable {
    /// The 101's headers (names lowercased), or the refusal.
    let result = EventQueue<Result<[String: String], HTTPRefusal>>()
}

/// A wait of several events that must end within `seconds` in all.
public struct Deadline: Sendable {
    let end: ContinuousClock.Instant
    let seconds: Double

    public init(seconds: Double) {
        self.seconds = seconds
        end = .now + .milliseconds(Int64(seconds * 1000))
    }

    /// Seconds left; throws once none are.
    public func remaining() throws -> Double {
        let left = end - .now
        let value = left.inSeconds
        guard value > 0 else { throw EventQueue<Int>.Timeout(seconds: seconds) }
        return value
    }
}
