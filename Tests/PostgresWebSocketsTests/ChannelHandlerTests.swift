import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOWebSocket
import Testing

@testable import PostgresWebSockets

private let secret = Array("embedded-channel-tests-secret-of-enough-length".utf8)

private func token(_ claims: String) -> String {
    func b64(_ text: String) -> String { Base64.encode(Array(text.utf8), urlSafe: true, padded: false) }
    let input = b64(#"{"alg":"HS256","typ":"JWT"}"#) + "." + b64(claims)
    return input + "."
        + Base64.encode(JWTAlgorithm.hs256.sign(key: secret, message: input), urlSafe: true, padded: false)
}

/// A server's shared parts on an `EmbeddedEventLoop`, without threads: the database counts
/// as down (nothing runs the listener), so handshakes do not wait for a LISTEN.
private final class Harness {
    let loop = EmbeddedEventLoop()
    let server: ServerContext
    /// Closed when the test is done: an open pipeline keeps its handlers alive (LeakSanitizer).
    private var channels: [EmbeddedChannel] = []

    deinit {
        for channel in channels { _ = try? channel.finish(acceptAlreadyClosed: true) }
    }

    init(_ configure: (inout Configuration) -> Void = { _ in }) {
        var configuration = Configuration(databaseURI: "unused", jwtSecret: secret)
        configure(&configuration)
        let logger = Logger(label: "embedded") { _ in SwiftLogNoOpLogHandler() }
        let status = DatabaseStatus()
        let registry = ListenRegistry(status: status)
        let hub = ChannelHub(
            group: loop, registry: registry, window: (64 << 20, .seconds(30)),
            routing: ListenChannelRouting(listenChannel: configuration.channels.listenChannel))
        let notifier = Notifier(
            conninfo: "unused", settings: configuration.notifier, status: status, pausedWriters: hub, logger: logger)
        server = ServerContext(
            configuration: configuration, keys: JWTKeyStore(fixed: JWTVerifier(secret: secret)), hub: hub,
            registry: registry, notifier: notifier, durableChannels: DurableDirectory(), staticFiles: nil, tls: nil,
            logger: logger)
    }

    func connection() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(handler: HTTPHandler(server: server), loop: loop)
        channels.append(channel)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }
}

private func request(_ path: String, method: String = "GET", upgrade: Bool = true, extra: String = "") -> ByteBuffer {
    var text = "\(method) \(path) HTTP/1.1\r\nHost: x\r\n"
    if upgrade {
        text +=
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    }
    return ByteBuffer(string: text + extra + "\r\n")
}

/// Everything the server wrote so far.
private func writtenBytes(_ channel: EmbeddedChannel) throws -> [UInt8] {
    var all: [UInt8] = []
    while let part = try channel.readOutbound(as: ByteBuffer.self) { all += part.readableBytesView }
    return all
}

private func written(_ channel: EmbeddedChannel) throws -> String {
    String(decoding: try writtenBytes(channel), as: UTF8.self)
}

/// A masked client frame, as bytes on the wire.
private func wireFrame(opcode: UInt8, _ payload: [UInt8]) -> ByteBuffer {
    let mask: [UInt8] = [3, 1, 4, 1]
    var buffer = ByteBuffer(bytes: [0x80 | opcode, 0x80 | UInt8(payload.count)] + mask)
    buffer.writeBytes(payload.enumerated().map { $0.element ^ mask[$0.offset % 4] })
    return buffer
}

@Suite("HTTPHandler (EmbeddedChannel)")
struct HTTPHandlerChannelTests {
    @Test("each refusal (and a plain GET) is answered with its status, one line, and the connection closes")
    func refusals() throws {
        let harness = Harness { $0.server.allowedOrigins = ["https://app.example"] }
        let cases: [(ByteBuffer, String, String)] = [
            (request("/chat/not-a-token"), "HTTP/1.1 401 Unauthorized", "malformed JWT"),
            (request("/" + token(#"{"mode":"rw"}"#)), "HTTP/1.1 403 Forbidden", "JWT claims no channel"),
            (request("/x", method: "POST", upgrade: false), "HTTP/1.1 405 Method Not Allowed", "allow: GET, HEAD"),
            (request("/x", upgrade: false), "HTTP/1.1 200 OK", "open a WebSocket on /<jwt>"),
            (request("/health", upgrade: false), "HTTP/1.1 503 Service Unavailable", #""database":"unavailable""#),
            (
                request("/chat/" + token(#"{"mode":"r"}"#), extra: "Origin: https://evil.example\r\n"),
                "HTTP/1.1 403 Forbidden", "origin not allowed"
            ),
            (ByteBuffer(string: "GET / HTTP/1.1\nHost: x\n\n"), "HTTP/1.1 400 Bad Request", "bare LF"),
        ]
        for (bytes, statusLine, detail) in cases {
            let channel = try harness.connection()
            try channel.writeInbound(bytes)
            harness.loop.run()
            let response = try written(channel)
            #expect(response.hasPrefix(statusLine + "\r\n"), "\(response.prefix(60))")
            #expect(response.contains(detail))
            #expect(response.contains("connection: close"))
            #expect(!channel.isActive)
        }
    }

    @Test("an authorized handshake gets its 101 and its frames; at the connection limit the next one gets 503")
    func upgradeAndCapacity() throws {
        let harness = Harness { $0.limits.maxConnections = 1 }
        let first = try harness.connection()
        try first.writeInbound(request("/chat/" + token(#"{"mode":"r"}"#)))
        harness.loop.run()
        let answer = try written(first)
        #expect(answer.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
        #expect(answer.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
        #expect(harness.server.slots.count == 1)

        let second = try harness.connection()
        try second.writeInbound(request("/chat/" + token(#"{"mode":"r"}"#)))
        harness.loop.run()
        #expect(try written(second).hasPrefix("HTTP/1.1 503 Service Unavailable"))

        // A read-only socket that writes is closed with 1008; the slot comes back once it is gone.
        try first.writeInbound(wireFrame(opcode: 0x1, Array("hi".utf8)))
        var close = try #require(try first.readOutbound(as: ByteBuffer.self))
        #expect(close.readBytes(length: 2) == [0x88, UInt8(2 + CloseReason.readOnly.text.utf8.count)])
        #expect(close.readInteger(as: UInt16.self) == 1008)
        try first.writeInbound(wireFrame(opcode: 0x8, [0x03, 0xE8]))
        harness.loop.run()
        #expect(!first.isActive)
        #expect(harness.server.slots.count == 0)
    }

    @Test("the peer's close frame is echoed with its code and the connection ends")
    func peerCloseHandshake() throws {
        let harness = Harness()
        let channel = try harness.connection()
        try channel.writeInbound(request("/chat/" + token(#"{"mode":"rw"}"#)))
        harness.loop.run()
        _ = try written(channel)
        try channel.writeInbound(wireFrame(opcode: 0x8, [0x0F, 0xA2]))
        harness.loop.run()
        var echo = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(echo.readBytes(length: 4) == [0x88, 0x02, 0x0F, 0xA2])
        #expect(!channel.isActive)
        #expect(harness.server.slots.count == 0)
    }

    @Test("frames sent with the handshake, before the 101, reach the session")
    func earlyFrames() throws {
        let harness = Harness()
        let channel = try harness.connection()
        var bytes = request("/chat/" + token(#"{"mode":"rw"}"#))
        var ping = wireFrame(opcode: 0x9, Array("early".utf8))
        bytes.writeBuffer(&ping)
        try channel.writeInbound(bytes)
        harness.loop.run()
        let answer = try writtenBytes(channel)
        #expect(answer.starts(with: Array("HTTP/1.1 101".utf8)))
        #expect(
            answer.suffix(7) == [0x8A, 0x05] + Array("early".utf8), "the pong answers the ping sent before the 101")
    }
}
