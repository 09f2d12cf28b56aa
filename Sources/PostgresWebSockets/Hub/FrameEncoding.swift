import NIOCore
import NIOWebSocket

/// How a socket wants notifications: postgres-websockets' raw text frames, `pgws.v1` message
/// frames, or server-sent events. Each encoding of a notification is made once per event
/// loop, the first time a socket of that encoding needs it, and shared by all of them.
enum FrameEncoding: Sendable, Equatable {
    case raw
    case v1
    case sse
}

/// Offsets of ordinary channels: `<epoch>:<sequence>`. The epoch is random per process, so an
/// offset from another process (or from before a restart) is recognized as foreign.
struct OffsetSpace: Sendable {
    let epoch: String

    init(epoch: String = OffsetSpace.randomEpoch()) {
        self.epoch = epoch
    }

    static func randomEpoch() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789".utf8)
        return String(decoding: (0..<8).map { _ in alphabet.randomElement()! }, as: UTF8.self)
    }

    func offset(_ sequence: UInt64) -> String {
        "\(epoch):\(sequence)"
    }

    /// The sequence of one of this process's offsets; nil for any other text.
    func sequence(of offset: Substring) -> UInt64? {
        guard let colon = offset.firstIndex(of: ":"), offset[..<colon] == epoch else { return nil }
        return UInt64(offset[offset.index(after: colon)...])
    }
}

/// The encodings of a notification other than its raw frame.
enum MessageFrames {
    /// The payload of a raw (unmasked, single) server text frame.
    static func payload(ofRawFrame frame: ByteBuffer) -> ByteBuffer {
        let lengthByte = frame.getInteger(at: frame.readerIndex + 1, as: UInt8.self)! & 0x7F
        let header = lengthByte < 126 ? 2 : lengthByte == 126 ? 4 : 10
        return frame.getSlice(at: frame.readerIndex + header, length: frame.readableBytes - header)!
    }

    /// `{"type":"message","channel":C,"offset":O,"payload":P}` as a WebSocket text frame.
    static func v1Message(channel: String, offset: String, payload: ByteBuffer) -> ByteBuffer {
        var writer = JSONWriter(capacity: payload.readableBytes + channel.utf8.count + offset.utf8.count + 64)
        writer.raw("{\"type\":\"message\",\"channel\":")
        writer.string(channel)
        writer.raw(",\"offset\":")
        writer.string(offset)
        writer.raw(",\"payload\":")
        payload.withUnsafeReadableBytes { writer.string(utf8: $0) }
        writer.raw("}")
        return textFrame(writer.bytes)
    }

    /// A `pgws.v1` reply or event as a WebSocket text frame.
    static func textFrame(_ json: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(json.count + 10)
        WebSocketFrames.writeHeader(opcode: .text, payloadLength: json.count, into: &buffer)
        buffer.writeBytes(json)
        return buffer
    }

    /// A server-sent event: `id: O`, the payload as `data:` lines (split at LF, CR and CRLF,
    /// as EventSource splits them), and an empty line.
    static func sseEvent(offset: String?, event: String? = nil, payload: ByteBuffer) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(payload.readableBytes + 64)
        if let event { buffer.writeString("event: \(event)\n") }
        if let offset { buffer.writeString("id: \(offset)\n") }
        payload.withUnsafeReadableBytes { bytes in
            var lineStart = 0
            var index = 0
            while index < bytes.count {
                let byte = bytes[index]
                guard byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") else {
                    index += 1
                    continue
                }
                buffer.writeStaticString("data: ")
                buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[lineStart..<index]))
                buffer.writeStaticString("\n")
                if byte == UInt8(ascii: "\r"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "\n") {
                    index += 1
                }
                index += 1
                lineStart = index
            }
            buffer.writeStaticString("data: ")
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[lineStart..<bytes.count]))
            buffer.writeStaticString("\n\n")
        }
        return buffer
    }
}
