import NIOCore
import NIOWebSocket

/// A notification ready for the sockets: its place in the server's order, its channel, and
/// the WebSocket text frame every reading socket of that channel is sent. One buffer,
/// shared by all of them.
struct Notification: Sendable {
    /// What the entry is besides its frame.
    enum Kind: Sendable, Equatable {
        /// A NOTIFY on the channel.
        case plain
        /// A message of a durable channel, with its offset there.
        case durable(UInt64)
        /// Not a message (no frame): from here on the channel is durable (and its newest
        /// offset is `last`) or no longer.
        case durability(isDurable: Bool, last: UInt64)
    }

    /// Consecutive over the server's life, in PostgreSQL's commit order.
    let sequence: UInt64
    let channel: ChannelKey
    let frame: ByteBuffer
    var kind = Kind.plain
}

/// Encodes the listener's notifications as WebSocket text frames, many per allocation.
///
/// NIO rounds every buffer up to a power of two, so a buffer per 1 KB frame would take
/// 2 KB. Frames are instead written back to back into 16 KB arenas; each notification gets
/// a slice (no copy). Slices are cut only when an arena is full or the batch ends: writing
/// into a buffer that slices already share would copy it.
struct FrameBatch: NotificationBatch {
    static let arenaSize = 16 * 1024

    private let routing: ListenChannelRouting
    private let allocator = ByteBufferAllocator()
    private var arena = ByteBuffer()
    private var pending: [(channel: ChannelKey, start: Int, length: Int, kind: Notification.Kind)] = []
    private var sealed: [(channel: ChannelKey, frame: ByteBuffer, kind: Notification.Kind)] = []
    private(set) var byteCount = 0

    var count: Int { sealed.count + pending.count }

    init(routing: ListenChannelRouting) {
        self.routing = routing
    }

    mutating func append(channel: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) {
        append(routing.route(channel: channel, payload: payload), payload: payload, kind: .plain)
    }

    mutating func append(durable channel: ChannelKey, offset: UInt64, payload: UnsafeRawBufferPointer) {
        append(channel, payload: payload, kind: .durable(offset))
    }

    mutating func append(durability channel: ChannelKey, isDurable: Bool, last: UInt64) {
        pending.append((channel, arena.writerIndex, 0, .durability(isDurable: isDurable, last: last)))
    }

    private mutating func append(_ channel: ChannelKey, payload: UnsafeRawBufferPointer, kind: Notification.Kind) {
        let length = WebSocketFrames.headerLength(payloadLength: payload.count) + payload.count
        if arena.writableBytes < length {
            seal()
            arena = allocator.buffer(capacity: max(Self.arenaSize, length))
        }
        let start = arena.writerIndex
        WebSocketFrames.writeHeader(opcode: .text, payloadLength: payload.count, into: &arena)
        arena.writeBytes(payload)
        pending.append((channel, start, length, kind))
        byteCount += length
    }

    /// The notifications, numbered from `firstSequence` on, ready to dispatch.
    consuming func notifications(firstSequence: UInt64) -> [Notification] {
        seal()
        return sealed.enumerated().map {
            Notification(
                sequence: firstSequence &+ UInt64($0.offset), channel: $0.element.channel, frame: $0.element.frame,
                kind: $0.element.kind)
        }
    }

    private mutating func seal() {
        // The delivery log keeps frames for up to max-lag-seconds: a batch that used little of
        // its arena (one small notification) moves to a buffer of its size instead of
        // pinning 16 KB each. One copy of a few bytes; full arenas are sliced as they are.
        var source = arena
        if arena.writerIndex * 2 < arena.capacity, let used = arena.getSlice(at: 0, length: arena.writerIndex) {
            source = allocator.buffer(capacity: used.readableBytes)
            source.writeImmutableBuffer(used)
        }
        for entry in pending {
            sealed.append((entry.channel, source.getSlice(at: entry.start, length: entry.length)!, entry.kind))
        }
        pending.removeAll(keepingCapacity: true)
        // The slices share the arena; dropping this reference keeps later writes from copying it.
        arena = ByteBuffer()
    }
}
