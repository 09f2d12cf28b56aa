import NIOCore
import NIOWebSocket

/// A notification ready for the sockets: its channel and the WebSocket text frame every
/// reading socket of that channel is sent. One buffer, shared by all of them.
struct Notification: Sendable {
    let channel: ChannelKey
    let frame: ByteBuffer
}

/// Encodes the listener's notifications as WebSocket text frames, many per allocation.
///
/// NIO rounds every buffer up to a power of two, so a buffer per 1 KB frame would take
/// 2 KB. Frames are instead written back to back into 16 KB arenas; each notification gets
/// a slice (no copy). Slices are cut only when an arena is full or the batch ends: writing
/// into a buffer that slices already share would copy it.
struct FrameBatch: NotificationBatch {
    static let arenaSize = 16 * 1024

    private let allocator = ByteBufferAllocator()
    private var arena = ByteBuffer()
    private var pending: [(channel: ChannelKey, start: Int, length: Int)] = []
    private var sealed: [Notification] = []
    private(set) var byteCount = 0

    var count: Int { sealed.count + pending.count }

    mutating func append(channel: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) {
        let length = WebSocketFrames.headerLength(payloadLength: payload.count) + payload.count
        if arena.writableBytes < length {
            seal()
            arena = allocator.buffer(capacity: max(Self.arenaSize, length))
        }
        let start = arena.writerIndex
        WebSocketFrames.writeHeader(opcode: .text, payloadLength: payload.count, into: &arena)
        arena.writeBytes(payload)
        pending.append((ChannelKey(String(decoding: channel, as: UTF8.self)), start, length))
        byteCount += length
    }

    /// The notifications, ready to dispatch.
    consuming func notifications() -> [Notification] {
        seal()
        return sealed
    }

    private mutating func seal() {
        for entry in pending {
            sealed.append(
                Notification(channel: entry.channel, frame: arena.getSlice(at: entry.start, length: entry.length)!))
        }
        pending.removeAll(keepingCapacity: true)
        // The slices share the arena; dropping this reference keeps later writes from copying it.
        arena = ByteBuffer()
    }
}
