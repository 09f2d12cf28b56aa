import BridgeTestSupport
import NIOCore
import NIOPosix
import PostgresWebSockets
import Synchronization

/// What the soak's sockets saw, all together.
struct SoakCounts: Sendable {
    var opened = 0
    var open = 0
    var refused = 0
    var frames = 0
    var sent = 0
    /// Closed by the server with 3001 at their token's `exp`.
    var expired = 0
    /// Closed by the server for another reason than an expired token or our own close.
    var closedOtherwise = 0
    /// Dropped without a close frame while we had not asked for it.
    var dropped = 0
    var samples: [String] = []
}

final class SoakCounters: Sendable {
    private let counts = Mutex(SoakCounts())

    func update(_ body: (inout SoakCounts) -> Void) {
        counts.withLock { body(&$0) }
    }

    func note(_ text: String) {
        counts.withLock { if $0.samples.count < 20 { $0.samples.append(text) } }
    }

    var snapshot: SoakCounts { counts.withLock { $0 } }
}

/// One WebSocket of the soak: opens itself, counts the text frames it gets, answers pings
/// and close frames, and sends masked text frames. Writes go straight to the channel, so
/// any thread may send or close.
final class SoakClient: Sendable {
    let channel: any Channel

    private init(channel: any Channel) {
        self.channel = channel
    }

    /// Opens `path`; nil (counted as refused) if the server did not answer 101 within 30 s.
    static func open(
        port: Int, path: String, counters: SoakCounters, group: any EventLoopGroup
    ) async -> SoakClient? {
        let loop = group.next()
        let opened = loop.makePromise(of: Void.self)
        do {
            let channel = try await ClientBootstrap(group: loop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(10))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            SoakHandler(path: path, port: port, counters: counters, opened: opened))
                    }
                }
                .connect(host: "127.0.0.1", port: port).get()
            loop.scheduleTask(in: .seconds(30)) { opened.fail(SoakFailure.noAnswer) }
            do {
                try await opened.futureResult.get()
            } catch {
                channel.close(promise: nil)
                throw error
            }
            return SoakClient(channel: channel)
        } catch {
            opened.fail(error)
            counters.update { $0.refused += 1 }
            counters.note("open \(path.prefix(40)): \(error)")
            return nil
        }
    }

    func send(text: String) {
        channel.writeAndFlush(SoakFrame.encode(opcode: 1, payload: Array(text.utf8)), promise: nil)
    }

    /// The closing handshake: the server answers and drops the connection.
    func close() {
        channel.pipeline.fireUserInboundEventTriggered(SoakHandler.Closing())
        channel.writeAndFlush(SoakFrame.encode(opcode: 8, payload: [0x03, 0xE8]), promise: nil)
    }

    /// Drops the TCP connection without a close frame, as a vanished client does.
    func abort() {
        channel.pipeline.fireUserInboundEventTriggered(SoakHandler.Closing())
        channel.close(promise: nil)
    }
}

enum SoakFailure: Error {
    case noAnswer
    case refused(String)
    case closedDuringHandshake
}

enum SoakFrame {
    static func encode(opcode: UInt8, payload: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(0x80 | opcode)
        if payload.count < 126 {
            buffer.writeInteger(0x80 | UInt8(payload.count))
        } else {
            buffer.writeInteger(UInt8(0x80 | 126))
            buffer.writeInteger(UInt16(payload.count))
        }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        buffer.writeBytes(mask)
        buffer.writeBytes(payload.enumerated().map { $0.element ^ mask[$0.offset & 3] })
        return buffer
    }
}

final class SoakHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Sent down the pipeline before we close: the end that follows is ours.
    struct Closing {}

    private let request: String
    private let counters: SoakCounters
    private let opened: EventLoopPromise<Void>
    private var isOpen = false
    private var closingByUs = false
    private var closeCode: UInt16? = nil
    private var pending = ByteBuffer()

    init(path: String, port: Int, counters: SoakCounters, opened: EventLoopPromise<Void>) {
        let key = Base64.encode((0..<16).map { _ in UInt8.random(in: 0...255) })
        request =
            "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
        self.counters = counters
        self.opened = opened
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: request)), promise: nil)
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is Closing { closingByUs = true }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        pending.writeBuffer(&buffer)
        if !isOpen {
            let view = pending.readableBytesView
            guard let end = view.firstRange(of: [13, 10, 13, 10]) else { return }
            let head = pending.readString(length: end.upperBound - view.startIndex) ?? ""
            guard head.hasPrefix("HTTP/1.1 101") else {
                opened.fail(SoakFailure.refused(String(head.prefix(while: { $0 != "\r" }))))
                context.close(promise: nil)
                return
            }
            isOpen = true
            counters.update {
                $0.opened += 1
                $0.open += 1
            }
            opened.succeed()
        }
        readFrames(context: context)
        pending.discardReadBytes()
    }

    private func readFrames(context: ChannelHandlerContext) {
        var texts = 0
        defer { if texts > 0 { counters.update { $0.frames += texts } } }
        while pending.readableBytes >= 2 {
            let start = pending.readerIndex
            let first = pending.getInteger(at: start, as: UInt8.self)!
            var length = Int(pending.getInteger(at: start + 1, as: UInt8.self)! & 0x7F)
            var header = 2
            if length == 126 {
                guard pending.readableBytes >= 4 else { return }
                length = Int(pending.getInteger(at: start + 2, as: UInt16.self)!)
                header = 4
            } else if length == 127 {
                guard pending.readableBytes >= 10 else { return }
                length = Int(pending.getInteger(at: start + 2, as: UInt64.self)!)
                header = 10
            }
            guard pending.readableBytes >= header + length else { return }
            let payload = pending.getBytes(at: start + header, length: length) ?? []
            pending.moveReaderIndex(forwardBy: header + length)
            switch first & 0x0F {
            case 1, 2:
                texts += 1
            case 8:
                let code = payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil
                closeCode = code
                if !closingByUs {
                    if code == 3001 {
                        counters.update { $0.expired += 1 }
                    } else {
                        counters.update { $0.closedOtherwise += 1 }
                        counters.note("closed by the server: \(code.map(String.init) ?? "no code")")
                    }
                    context.writeAndFlush(
                        wrapOutboundOut(SoakFrame.encode(opcode: 8, payload: Array(payload.prefix(2)))), promise: nil)
                }
            case 9:
                context.writeAndFlush(wrapOutboundOut(SoakFrame.encode(opcode: 0xA, payload: payload)), promise: nil)
            default:
                break
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if isOpen {
            counters.update { $0.open -= 1 }
            if closeCode == nil && !closingByUs {
                counters.update { $0.dropped += 1 }
                counters.note("dropped without a close frame")
            }
        } else {
            opened.fail(SoakFailure.closedDuringHandshake)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
