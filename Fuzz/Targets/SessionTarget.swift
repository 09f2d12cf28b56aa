import Logging
import NIOCore
import NIOEmbedded
import NIOWebSocket

@testable import PostgresWebSockets

/// A WebSocket connection fed raw bytes through `EmbeddedChannel`: a valid handshake (raw or
/// `pgws.v1`, read, write or both), then what the fuzzer sends, in reads of a size it picks,
/// then the server's side of the end (a ping round, a shutdown, or the peer going away).
///
/// The first byte holds the mode (bits 0-1), `pgws.v1` (bit 2), whether the rest is raw wire
/// bytes or frame descriptions the target encodes and masks (bit 3), whether the server shuts
/// down (bit 4) and whether the session's timers run (bit 5); the second the size of a read.
/// A frame description is a header byte (FIN, RSV, opcode, as sent), a form byte (bit 0
/// unmasked, bit 1 16-bit length, bit 2 64-bit length), a length byte and the payload.
///
/// Properties:
/// - the answer to the handshake is a 101, and everything after it is whole server frames:
///   unmasked, final, no RSV bit, a known opcode, the shortest length form, control frames of
///   at most 125 bytes;
/// - text frames are UTF-8 (and JSON objects with a `type` on `pgws.v1`);
/// - at most one close frame, and nothing after it; its code is one a server may send and its
///   reason UTF-8;
/// - once the connection is gone, its connection slot is given back and its shard holds no
///   member.
enum SessionTarget {
    static let target = FuzzTarget(name: "session", summary: "a WebSocket session on EmbeddedChannel", run: run)

    static let modes = ["r", "w", "rw"]
    static let tokens: [String] = modes.map { mode in
        let claims = #"{"mode":"\#(mode)","channel":"chat","role":"fuzz"}"#
        return JWTTarget.sign(header: Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8), claims: Array(claims.utf8))
    }

    static func run(_ data: UnsafeRawBufferPointer) {
        var input = FuzzInput(data)
        let flags = input.byte()
        let mode = Int(flags & 0x03) % 3
        let v1 = flags & 0x04 != 0
        let readSize = Int(input.byte()) % 64 + 1
        let wire = flags & 0x08 != 0 ? encodeFrames(&input) : input.rest()

        let loop = Self.loop
        let server = Self.server
        let channel = EmbeddedChannel(handler: HTTPHandler(server: server), loop: loop)
        _ = try? channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        var head = "GET /\(tokens[mode]) HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        head += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        if v1 { head += "Sec-WebSocket-Protocol: pgws.v1\r\n" }
        _ = try? channel.writeInbound(ByteBuffer(string: head + "\r\n"))
        loop.run()

        var offset = 0
        while offset < wire.count, channel.isActive {
            let end = min(wire.count, offset + readSize)
            _ = try? channel.writeInbound(ByteBuffer(bytes: wire[offset..<end]))
            loop.run()
            offset = end
        }
        if channel.isActive, let session = try? channel.pipeline.syncOperations.handler(type: WebSocketSession.self) {
            if flags & 0x20 != 0 {
                // A ping after the interval, then the pong's time out.
                let start = NIODeadline.now()
                session.tick(now: start + .seconds(31), wallClock: 0)
                loop.run()
                session.tick(now: start + .seconds(60), wallClock: 0)
                loop.run()
            }
            if flags & 0x10 != 0 {
                server.hub.shard(on: loop).shutDownAll()
                loop.run()
            }
        }
        _ = try? channel.close().wait()
        loop.run()
        // Past every timer the connection left (handshake timeout, a channel's lingering log).
        loop.advanceTime(by: .seconds(600))

        var output: [UInt8] = []
        while let part = try? channel.readOutbound(as: ByteBuffer.self) { output += part.readableBytesView }
        _ = try? channel.finish()
        check(output, v1: v1)
        expect(server.slots.count == 0, "the connection slot was not given back")
        expect(server.hub.shard(on: loop).memberCount == 0, "the shard still holds the session")
    }

    /// One server for the process, as in production: its hub, notifier and database status
    /// hold each other for the server's life, so one made per input would be a leak of the
    /// harness's making. The database is down and the notifier's queue takes nothing (a raw
    /// writer is closed with 1013, a `pgws.v1` publish answered `unavailable`), so nothing
    /// piles up from input to input and every input meets the same server; each leaves it as
    /// it found it (no slot, no member, no timer). That is also what lets libFuzzer's leak
    /// check tell a connection's leak: an input that ends with more allocations than it began.
    static let loop = EmbeddedEventLoop()
    static let server = makeServer(loop: loop)

    static func makeServer(loop: EmbeddedEventLoop) -> ServerContext {
        var configuration = Configuration(databaseURI: "unused", jwtSecret: FuzzKeys.hmacSecret)
        configuration.limits.maxMessageSize = 512
        configuration.notifier.maxPendingMessages = 0
        let logger = Logger(label: "fuzz") { _ in SwiftLogNoOpLogHandler() }
        let status = DatabaseStatus()
        let registry = ListenRegistry(status: status)
        let hub = ChannelHub(
            group: loop, registry: registry, window: (64 << 10, .seconds(30)),
            routing: ListenChannelRouting(listenChannel: configuration.channels.listenChannel))
        let notifier = Notifier(
            conninfo: "unused", settings: configuration.notifier, status: status, pausedWriters: hub, logger: logger)
        return ServerContext(
            configuration: configuration, keys: JWTKeyStore(fixed: JWTVerifier(keys: JWTTarget.keys)), hub: hub,
            registry: registry, notifier: notifier, durableChannels: DurableDirectory(), staticFiles: nil, tls: nil,
            logger: logger)
    }

    static func encodeFrames(_ input: inout FuzzInput) -> [UInt8] {
        var wire: [UInt8] = []
        while !input.isAtEnd {
            let header = input.byte()
            let form = input.byte()
            let payload = input.take(Int(input.byte()))
            let mask: [UInt8] = [header, form, 0x5A, 0xA5]
            let masked = form & 0x01 == 0
            wire.append(header)
            let maskBit: UInt8 = masked ? 0x80 : 0
            if form & 0x04 != 0 {
                wire.append(maskBit | 127)
                wire += withUnsafeBytes(of: UInt64(payload.count).bigEndian, Array.init)
            } else if form & 0x02 != 0 || payload.count > 125 {
                wire.append(maskBit | 126)
                wire += withUnsafeBytes(of: UInt16(payload.count).bigEndian, Array.init)
            } else {
                wire.append(maskBit | UInt8(payload.count))
            }
            if masked {
                wire += mask
                wire += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
            } else {
                wire += payload
            }
        }
        return wire
    }

    static func check(_ output: [UInt8], v1: Bool) {
        let headEnd = output.indices.first { output[$0...].starts(with: Array("\r\n\r\n".utf8)) }
        guard let headEnd else { return expect(false, "no response head") }
        let head = String(decoding: output[..<headEnd], as: UTF8.self)
        expect(
            head.hasPrefix("HTTP/1.1 101 "), "the handshake was answered with \(String(head.prefix(40)).debugEscaped)")
        var rest = output[(headEnd + 4)...]
        var closed = false
        while !rest.isEmpty {
            expect(!closed, "a frame after the close frame")
            guard rest.count >= 2 else { return expect(false, "a partial frame header") }
            let first = rest[rest.startIndex]
            let second = rest[rest.startIndex + 1]
            rest = rest.dropFirst(2)
            expect(first & 0x80 != 0 && first & 0x70 == 0, "frame header byte \(first)")
            expect(second & 0x80 == 0, "a masked server frame")
            var length = Int(second & 0x7F)
            if length == 126 {
                guard rest.count >= 2 else { return expect(false, "a partial length") }
                length = rest.prefix(2).reduce(0) { $0 << 8 | Int($1) }
                rest = rest.dropFirst(2)
                expect(length > 125, "a 16-bit length for \(length) bytes")
            } else if length == 127 {
                guard rest.count >= 8 else { return expect(false, "a partial length") }
                length = rest.prefix(8).reduce(0) { $0 << 8 | Int($1) }
                rest = rest.dropFirst(8)
                expect(length > 0xFFFF, "a 64-bit length for \(length) bytes")
            }
            guard rest.count >= length else { return expect(false, "a partial payload") }
            let payload = Array(rest.prefix(length))
            rest = rest.dropFirst(length)
            let opcode = first & 0x0F
            switch opcode {
            case 0x1:
                expect(String(validating: payload, as: UTF8.self) != nil, "a text frame that is not UTF-8")
                if v1 {
                    let reply = try? JSONParser.parse(payload)
                    expect(reply?["type"]?.stringValue != nil, "a pgws.v1 frame without a type")
                }
            case 0x2:
                expect(false, "a binary frame")
            case 0x8:
                closed = true
                expect(payload.count <= 125, "a close frame of \(payload.count) bytes")
                expect(payload.count != 1, "a close frame of one byte")
                if payload.count >= 2 {
                    let code = UInt16(payload[0]) << 8 | UInt16(payload[1])
                    expect(
                        CloseReason.isValidFromPeer(code) || code == 1001 || code == 3001,
                        "close code \(code) is not one to send")
                    expect(String(validating: payload[2...], as: UTF8.self) != nil, "a close reason that is not UTF-8")
                }
            case 0x9, 0xA:
                expect(payload.count <= 125, "a control frame of \(payload.count) bytes")
            default:
                expect(false, "opcode \(opcode)")
            }
        }
    }
}
