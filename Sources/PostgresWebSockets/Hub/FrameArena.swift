import NIOCore
import NIOWebSocket

/// Encodes received notifications as WebSocket text frames, many per allocation.
///
/// NIO rounds every buffer up to a power of two, so a buffer per 1 KB frame would take
/// 2 KB. Frames are instead written back to back into 16 KB arenas; each notification gets
/// a slice (no copy). Slices are cut only when an arena is full or the batch ends: writing
/// into a buffer that slices already share would copy it.
struct FrameArena {
    static let arenaSize = 16 * 1024

    private let allocator = ByteBufferAllocator()
    private var arena = ByteBuffer()
    private var pending: [(channel: String, start: Int, length: Int)] = []
    private(set) var notifications: [Notification] = []
    private(set) var byteCount = 0

    var count: Int { notifications.count + pending.count }

    mutating func append(channel: String, payload: UnsafeRawBufferPointer) {
        let length = WebSocketFrames.headerLength(payloadLength: payload.count) + payload.count
        if arena.writableBytes < length {
            seal()
            arena = allocator.buffer(capacity: max(Self.arenaSize, length))
        }
        let start = arena.writerIndex
        WebSocketFrames.writeHeader(opcode: .text, payloadLength: payload.count, into: &arena)
        arena.writeBytes(payload)
        pending.append((channel, start, length))
        byteCount += length
    }

    /// The notifications so far, ready to dispatch; the arena starts over.
    mutating func take() -> [Notification] {
        seal()
        defer {
            notifications = []
            byteCount = 0
        }
        return notifications
    }

    private mutating func seal() {
        for entry in pending {
            notifications.append(
                Notification(channel: entry.channel, frame: arena.getSlice(at: entry.start, length: entry.length)!))
        }
        pending.removeAll(keepingCapacity: true)
        // The slices share the arena; dropping this reference keeps later writes from copying it.
        arena = ByteBuffer()
    }
}
