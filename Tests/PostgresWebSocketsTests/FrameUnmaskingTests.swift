import NIOCore
import NIOWebSocket
import Testing

@testable import PostgresWebSockets

@Suite struct FrameUnmaskingTests {
    /// NIO's own unmasking is the reference, for every length around the eight-byte steps.
    @Test func agreesWithNIOForEveryLengthAndKey() {
        var generator = SystemRandomNumberGenerator()
        for length in 0...40 {
            for _ in 0..<20 {
                let key = WebSocketMaskingKey((0..<4).map { _ in UInt8.random(in: 0...255, using: &generator) })!
                let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: key, data: ByteBuffer(bytes: bytes))
                #expect(frame.unmaskedPayload == frame.unmaskedData, "length \(length)")
            }
        }
    }

    @Test func anUnmaskedFrameIsReturnedAsItIs() {
        let frame = WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: "plain"))
        #expect(frame.unmaskedPayload == ByteBuffer(string: "plain"))
    }
}
