import NIOCore
import NIOWebSocket

/// Server-to-client frames, encoded by hand into one buffer each.
///
/// A broadcast frame is built once and the same buffer is written to every socket, so the
/// server never allocates per delivery; NIO's `WebSocketFrameEncoder` would write a
/// separate header buffer for every socket instead.
enum WebSocketFrames {
    static func headerLength(payloadLength: Int) -> Int {
        switch payloadLength {
        case 0...125: 2
        case 126...0xFFFF: 4
        default: 10
        }
    }

    static func writeHeader(opcode: WebSocketOpcode, payloadLength: Int, into buffer: inout ByteBuffer) {
        buffer.writeInteger(0x80 | UInt8(webSocketOpcode: opcode))  // FIN, no RSV bits
        switch payloadLength {
        case 0...125:
            buffer.writeInteger(UInt8(payloadLength))
        case 126...0xFFFF:
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(payloadLength))
        default:
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(payloadLength))
        }
    }

    static func frame(opcode: WebSocketOpcode, payload: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(
            capacity: headerLength(payloadLength: payload.readableBytes) + payload.readableBytes)
        writeHeader(opcode: opcode, payloadLength: payload.readableBytes, into: &buffer)
        buffer.writeImmutableBuffer(payload)
        return buffer
    }

    /// A close frame; the reason is cut to fit the 125-byte control frame limit.
    static func close(code: UInt16, reason: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        var payload = allocator.buffer(capacity: 125)
        payload.writeInteger(code)
        var reasonBytes = Array(reason.utf8.prefix(123))
        while String(validating: reasonBytes, as: UTF8.self) == nil { reasonBytes.removeLast() }
        payload.writeBytes(reasonBytes)
        return frame(opcode: .connectionClose, payload: payload, allocator: allocator)
    }
}
