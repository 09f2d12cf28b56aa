import BridgeTestSupport
import Foundation
import NIOCore
import NIOPosix
import PostgresWebSockets
import Testing

/// The configurable limits: connections, handshake time, header size, origins.
@Suite struct LimitTests {
    @Test func connectionsAboveMaximumGet503() async throws {
        try await TestServer.with({ $0.limits.maxConnections = 2 }) { server in
            let channel = uniqueChannel()
            let first = try await server.connect(channel: channel, mode: "r")
            _ = try await server.connect(channel: channel, mode: "r")
            guard case .refused(let refusal) = try await server.open("/\(channel)/\(TestTokens.mint(mode: "r"))") else {
                Issue.record("a third socket was accepted")
                return
            }
            #expect(refusal.status == 503)
            #expect(refusal.body.contains("connection limit"))
            try await first.close()
            #expect(try await first.next() == .close(code: 1000, reason: ""))
            #expect(try await first.next() == .disconnected)
            // The slot is given back once the server saw the socket end.
            try await waitUntil(timeout: 10, "a free slot") { server.bridge.openConnections < 2 }
            _ = try await server.connect(channel: channel, mode: "r")
        }
    }

    /// 8 s: the partial request goes out right after connecting; a loaded machine has taken
    /// more than 4 s between the two.
    @Test func silentPeerIsDroppedAfterHandshakeTimeout() async throws {
        try await TestServer.with({ $0.limits.handshakeTimeout = .fromSeconds(8) }) { server in
            let silent = try await RawConnection.open(port: server.port)
            #expect(try await silent.readToEnd(timeout: 20).isEmpty)
            let partial = try await RawConnection.open(port: server.port)
            try await partial.send("GET /x HTTP/1.1\r\nHost: y\r\n")
            let answer = try await partial.readToEnd(timeout: 20)
            #expect(answer.hasPrefix("HTTP/1.1 408"))
        }
    }

    @Test func oversizedRequestHeadGets431() async throws {
        try await TestServer.with({ $0.limits.maxHeaderSize = 4096 }) { server in
            let connection = try await RawConnection.open(port: server.port)
            let huge = String(repeating: "a", count: 5000)
            try await connection.send("GET /\(huge) HTTP/1.1\r\nHost: y\r\n\r\n")
            let answer = try await connection.readToEnd(timeout: 10)
            #expect(answer.hasPrefix("HTTP/1.1 431"), "\(answer.prefix(80))")
            let manyHeaders = try await RawConnection.open(port: server.port)
            var request = "GET /x HTTP/1.1\r\n"
            for i in 0..<200 { request += "X-Filler-\(i): \(String(repeating: "v", count: 30))\r\n" }
            try await manyHeaders.send(request + "\r\n")
            #expect(try await manyHeaders.readToEnd(timeout: 10).hasPrefix("HTTP/1.1 431"))
        }
    }

    @Test func originsOutsideTheAllowListGet403() async throws {
        try await TestServer.with({ $0.server.allowedOrigins = ["https://app.example", "http://localhost:3000"] }) {
            server in
            let channel = uniqueChannel()
            let path = "/\(channel)/\(TestTokens.mint(mode: "r"))"
            _ = try await server.connect(path, headers: [("Origin", "https://app.example")])
            _ = try await server.connect(path, headers: [("Origin", "HTTP://LOCALHOST:3000")])
            // Non-browser clients send no Origin; the list is a browser (CSWSH) defence.
            _ = try await server.connect(path)
            guard
                case .refused(let refusal) = try await server.open(path, headers: [("Origin", "https://evil.example")])
            else {
                Issue.record("a foreign origin was accepted")
                return
            }
            #expect(refusal.status == 403)
            #expect(refusal.body.contains("origin not allowed"))
        }
    }
}

/// A raw TCP connection for requests no HTTP client would send.
final class RawConnection: Sendable {
    private let channel: any Channel
    private let received: EventQueue<ByteBuffer?>

    private init(channel: any Channel, received: EventQueue<ByteBuffer?>) {
        self.channel = channel
        self.received = received
    }

    static func open(port: Int) async throws -> RawConnection {
        let received = EventQueue<ByteBuffer?>()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(received: received))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawConnection(channel: channel, received: received)
    }

    func send(_ text: String) async throws {
        try await channel.writeAndFlush(ByteBuffer(string: text))
    }

    func send(bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    /// Everything the server sends until it closes the connection.
    func readToEnd(timeout: Double) async throws -> String {
        var all = ByteBuffer()
        while var chunk = try await received.next(timeout: timeout) {
            all.writeBuffer(&chunk)
        }
        return all.readString(length: all.readableBytes) ?? ""
    }

    func close() async {
        try? await channel.close()
    }

    private final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let received: EventQueue<ByteBuffer?>
        init(received: EventQueue<ByteBuffer?>) { self.received = received }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { received.push(unwrapInboundIn(data)) }
        func channelInactive(context: ChannelHandlerContext) { received.push(nil) }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }
}
