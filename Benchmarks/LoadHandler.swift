import BridgeTestSupport
import Glibc
import NIOCore
import PostgresWebSockets

/// One benchmark socket, lean on purpose: it performs the HTTP upgrade itself, parses the
/// server's frames in place, and records each text frame in its event loop's `LoopStats`
/// (no lock, no allocation, no async hop per message). It answers pings and close frames
/// like a browser, and can send a stream of masked text frames as a writer.
final class LoadHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Verdict { case complete, short, excess, disordered }
    private enum State { case handshaking, open, closing, closed }

    struct HandshakeFailure: Error, CustomStringConvertible {
        let description: String
    }

    let index: Int
    private let request: String
    private let expectedAccept: String
    private let stats: LoopStats
    private let handshake: EventLoopPromise<Int64>
    private let seqBase: Int
    private let checksRouting: Bool
    private let messageSize: Int
    private var state = State.handshaking
    private var context: ChannelHandlerContext? = nil
    private var inbound: ByteBuffer? = nil
    private var sentClose = false
    private var weClosedFirst = false
    private var serverClose: String? = nil
    private var random: UInt64

    // Receiving: the current phase's count and the next expected seq.
    private var phase = Int.min
    private var count = 0
    private var nextSeq = 0
    private var disordered = false

    // Writing.
    private var writeTotal = 0
    private var written = 0
    private var writing = false
    private var window: WriterWindow? = nil

    /// `pgws.v1`: messages arrive as JSON frames whose payload is the measured text.
    private let structured: Bool
    /// A text frame to send as soon as the socket opens (a `pgws.v1` subscribe with `since`).
    private let openingFrame: String?

    init(
        index: Int, host: String, port: Int, path: String, stats: LoopStats, handshake: EventLoopPromise<Int64>,
        seqFromIndex: Bool, messageSize: Int, subprotocols: String? = nil, openingFrame: String? = nil
    ) {
        self.structured = subprotocols?.hasPrefix("pgws.v1") ?? false
        self.openingFrame = openingFrame
        self.index = index
        self.stats = stats
        self.handshake = handshake
        self.seqBase = seqFromIndex ? index : 0
        self.checksRouting = seqFromIndex
        self.messageSize = messageSize
        var generator = SystemRandomNumberGenerator()
        random = generator.next() | 1
        let keyBytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let key = Base64.encode(keyBytes)
        expectedAccept = WebSocketClient.accept(for: key)
        request =
            "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
            + (subprotocols.map { "Sec-WebSocket-Protocol: \($0)\r\n" } ?? "") + "\r\n"
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: request.utf8.count)
        buffer.writeString(request)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if var pending = inbound {
            inbound = nil
            pending.writeBuffer(&buffer)
            buffer = pending
        }
        if state == .handshaking {
            guard readResponse(&buffer, context: context) else { return }
        }
        readFrames(&buffer, context: context)
        guard buffer.readableBytes > 0 else { return }
        // Keep only the partial frame, not the whole read buffer (up to 64 KB per socket).
        if buffer.capacity > 4 * buffer.readableBytes + 1024 {
            var rest = context.channel.allocator.buffer(capacity: buffer.readableBytes)
            rest.writeBuffer(&buffer)
            inbound = rest
        } else {
            inbound = buffer
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        switch state {
        case .handshaking:
            handshake.fail(HandshakeFailure(description: "connection closed during the handshake"))
        case .open, .closing:
            let byServer = serverClose != nil && !weClosedFirst
            let unexpected = serverClose == nil && !weClosedFirst
            stats.socketClosed(
                byServer: byServer, unexpected: unexpected,
                detail: "socket \(index): " + (serverClose ?? "disconnected without a close frame"))
        case .closed:
            break
        }
        state = .closed
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if state == .handshaking {
            handshake.fail(HandshakeFailure(description: "\(error)"))
        }
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if writing && context.channel.isWritable { pump() }
        context.fireChannelWritabilityChanged()
    }

    // MARK: - Handshake

    /// Consumes the HTTP response; true once the socket is open (remaining bytes are frames).
    private func readResponse(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) -> Bool {
        let view = buffer.readableBytesView
        guard let end = view.firstRange(of: [13, 10, 13, 10]) else {
            if buffer.readableBytes > 16 * 1024 { failHandshake("response head too long", context: context) }
            inbound = buffer
            buffer = ByteBuffer()
            return false
        }
        let head = buffer.readString(length: end.upperBound - view.startIndex) ?? ""
        let lines = head.split(separator: "\r\n")
        let statusLine = lines.first.map(String.init) ?? ""
        guard statusLine.hasPrefix("HTTP/1.1 101") else {
            failHandshake(
                "answer was '\(statusLine)' \(buffer.readString(length: min(200, buffer.readableBytes)) ?? "")",
                context: context)
            return false
        }
        let accept = lines.dropFirst().first { $0.lowercased().hasPrefix("sec-websocket-accept:") }
            .map { $0.dropFirst("sec-websocket-accept:".count).trimmingSpaces() }
        guard accept == expectedAccept else {
            failHandshake("wrong Sec-WebSocket-Accept", context: context)
            return false
        }
        state = .open
        stats.socketOpened(self)
        handshake.succeed(Clock.wallMicros())
        if let openingFrame { send(opcode: 1, payload: Array(openingFrame.utf8), context: context) }
        return true
    }

    private func failHandshake(_ reason: String, context: ChannelHandlerContext) {
        state = .closed
        handshake.fail(HandshakeFailure(description: reason))
        context.close(promise: nil)
    }

    // MARK: - Frames

    private func readFrames(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) {
        var now: Int64 = 0
        while buffer.readableBytes >= 2 {
            let start = buffer.readerIndex
            let first = buffer.getInteger(at: start, as: UInt8.self)!
            let second = buffer.getInteger(at: start + 1, as: UInt8.self)!
            var length = Int(second & 0x7F)
            var header = 2
            if length == 126 {
                guard buffer.readableBytes >= 4 else { return }
                length = Int(buffer.getInteger(at: start + 2, as: UInt16.self)!)
                header = 4
            } else if length == 127 {
                guard buffer.readableBytes >= 10 else { return }
                length = Int(buffer.getInteger(at: start + 2, as: UInt64.self)!)
                header = 10
            }
            if second & 0x80 != 0 || first & 0x80 == 0 {
                stats.unparsableFrame("socket \(index): masked or fragmented server frame (bytes \(first), \(second))")
                context.close(promise: nil)
                buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
                return
            }
            guard buffer.readableBytes >= header + length else { return }
            switch first & 0x0F {
            case 1:
                if now == 0 { now = Clock.wallMicros() }
                received(buffer, at: header, length: length, now: now)
            case 8:
                receivedClose(buffer.getSlice(at: start + header, length: length)!, context: context)
            case 9:
                send(opcode: 0xA, payload: buffer.getBytes(at: start + header, length: length)!, context: context)
            case 0xA:
                break
            default:
                stats.unparsableFrame("socket \(index): unexpected opcode \(first & 0x0F)")
            }
            buffer.moveReaderIndex(forwardBy: header + length)
        }
    }

    private func received(_ buffer: ByteBuffer, at offset: Int, length: Int, now: Int64) {
        var offset = offset
        if structured {
            // {"type":"message",...,"payload":"p1:s2:t3:xxx"}; replies (subscribed) are skipped.
            guard let start = Self.payloadStart(buffer, at: offset, length: length) else { return }
            offset = start
        }
        let fields = buffer.withUnsafeReadableBytes { bytes in
            Payload.parse(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + min(length, 64))]))
        }
        guard let fields else {
            let text = buffer.getString(at: buffer.readerIndex + offset, length: min(length, 40)) ?? "?"
            stats.unparsableFrame("socket \(index): unparsable text frame '\(text)'")
            return
        }
        if fields.tag != phase {
            if fields.tag < phase {
                stats.lateFrame("socket \(index): frame of phase \(fields.tag) after phase \(phase) began")
                return
            }
            phase = fields.tag
            count = 0
            nextSeq = seqBase
            disordered = false
        }
        let phaseStats = stats.phase(phase)
        count += 1
        if fields.seq != nextSeq {
            disordered = true
            if checksRouting {
                phaseStats.misrouted += 1
                stats.problem("socket \(index): got seq \(fields.seq) of another channel")
            } else if fields.seq < nextSeq {
                phaseStats.duplicates += 1
                stats.problem("socket \(index) phase \(phase): seq \(fields.seq) after \(nextSeq - 1)")
            } else {
                phaseStats.gaps += fields.seq - nextSeq
                stats.problem("socket \(index) phase \(phase): seq \(fields.seq), expected \(nextSeq)")
            }
        }
        nextSeq = max(nextSeq, fields.seq + 1)
        phaseStats.record(seq: fields.seq, latency: now - fields.sentMicros, now: now, bytes: length)
    }

    private static let messagePrefix = Array(#"{"type":"message""#.utf8)
    private static let payloadKey = Array(#""payload":""#.utf8)

    /// Where the payload of a `pgws.v1` message frame starts, or nil for any other frame.
    /// memchr and memcmp, not `firstRange(of:)`: that generic search cost this client more CPU
    /// per frame than the server spent sending it, and the replay row measured the client.
    private static func payloadStart(_ buffer: ByteBuffer, at offset: Int, length: Int) -> Int? {
        buffer.withUnsafeReadableBytes { bytes -> Int? in
            guard length >= messagePrefix.count, let base = bytes.baseAddress else { return nil }
            let frame = base + offset
            guard memcmp(frame, messagePrefix, messagePrefix.count) == 0 else { return nil }
            let last = length - payloadKey.count
            var position = 0
            while position <= last {
                guard let hit = memchr(frame + position, Int32(payloadKey[0]), last - position + 1) else { return nil }
                let at = frame.distance(to: UnsafeRawPointer(hit))
                if memcmp(frame + at, payloadKey, payloadKey.count) == 0 { return offset + at + payloadKey.count }
                position = at + 1
            }
            return nil
        }
    }

    private func receivedClose(_ payload: ByteBuffer, context: ChannelHandlerContext) {
        var payload = payload
        let code = payload.readInteger(as: UInt16.self)
        let reason = payload.readString(length: payload.readableBytes) ?? ""
        serverClose = "closed by the server with \(code.map(String.init) ?? "no code") \(reason)"
        if state == .open { state = .closing }
        if !sentClose {
            sentClose = true
            let echo = code.map { withUnsafeBytes(of: $0.bigEndian) { Array($0) } } ?? []
            send(opcode: 0x8, payload: echo, context: context)
        }
    }

    /// Where the socket stands after `phase`: its frames must have been exactly
    /// base ..< base + expected, in order.
    func verdict(phase number: Int, expected: Int) -> Verdict {
        let received = phase == number ? count : 0
        if phase == number && disordered { return .disordered }
        if received < expected { return .short }
        if received > expected { return .excess }
        return .complete
    }

    // MARK: - Sending

    /// Starts the closing handshake; the server answers and drops the connection.
    func closeGracefully() {
        guard state == .open, let context else { return }
        state = .closing
        weClosedFirst = true
        sentClose = true
        writing = false
        send(opcode: 0x8, payload: [0x03, 0xE8], context: context)
    }

    func abort() {
        context?.close(promise: nil)
    }

    /// Sends `total` text messages as fast as the socket takes them: 64 frames per write,
    /// then a turn for the loop's other sockets, pausing while the channel is not writable.
    /// With a `window`, also pausing (re-checking every 200 µs) while `window.size` of this
    /// writer's messages have not reached PostgreSQL yet.
    func startWriting(total: Int, window: WriterWindow?) {
        writeTotal = total
        written = 0
        writing = true
        self.window = window
        pump()
    }

    private func pump() {
        guard writing, state == .open, let context else { return }
        var buffer = context.channel.allocator.buffer(capacity: 64 * (messageSize + 16))
        var batch = 0
        var held = false
        while written < writeTotal && batch < 64 {
            if let window, !window.allows(index, sent: written) {
                held = true
                break
            }
            let text = Payload.writer(id: index, seq: written, sentMicros: Clock.wallMicros(), size: messageSize)
            appendFrame(opcode: 0x1, payload: text.utf8, into: &buffer)
            written += 1
            batch += 1
        }
        if batch > 0 { context.writeAndFlush(wrapOutboundOut(buffer), promise: nil) }
        guard written < writeTotal else {
            writing = false
            return
        }
        if held {
            context.eventLoop.assumeIsolated().scheduleTask(in: .microseconds(200)) { self.pump() }
        } else if context.channel.isWritable {
            context.eventLoop.assumeIsolated().execute { self.pump() }
        }
    }

    private func send(opcode: UInt8, payload: [UInt8], context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: payload.count + 14)
        appendFrame(opcode: opcode, payload: payload, into: &buffer)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    /// A client frame: FIN, `opcode`, masked with a fresh key as RFC 6455 requires.
    private func appendFrame(opcode: UInt8, payload: some Collection<UInt8>, into buffer: inout ByteBuffer) {
        buffer.writeInteger(0x80 | opcode)
        let count = payload.count
        if count < 126 {
            buffer.writeInteger(0x80 | UInt8(count))
        } else if count <= 0xFFFF {
            buffer.writeInteger(UInt8(0x80 | 126))
            buffer.writeInteger(UInt16(count))
        } else {
            buffer.writeInteger(UInt8(0x80 | 127))
            buffer.writeInteger(UInt64(count))
        }
        random ^= random << 13
        random ^= random >> 7
        random ^= random << 17
        let key = UInt32(truncatingIfNeeded: random)
        buffer.writeInteger(key)
        let mask = (
            UInt8(key >> 24), UInt8(truncatingIfNeeded: key >> 16), UInt8(truncatingIfNeeded: key >> 8),
            UInt8(truncatingIfNeeded: key)
        )
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { out in
            var position = 0
            for byte in payload {
                let m: UInt8
                switch position & 3 {
                case 0: m = mask.0
                case 1: m = mask.1
                case 2: m = mask.2
                default: m = mask.3
                }
                out[position] = byte ^ m
                position += 1
            }
            return count
        }
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> String {
        String(self.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
