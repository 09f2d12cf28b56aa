import NIOCore
import NIOWebSocket
import Testing

@testable import PostgresWebSockets

/// A frame as a browser sends it: masked.
func clientFrame(_ opcode: WebSocketOpcode, _ payload: [UInt8], fin: Bool = true, masked: Bool = true) -> WebSocketFrame
{
    var data = ByteBuffer(bytes: payload)
    let key: WebSocketMaskingKey? = masked ? WebSocketMaskingKey([7, 1, 9, 3]) : nil
    if let key { data.webSocketMask(key) }
    return WebSocketFrame(fin: fin, opcode: opcode, maskKey: key, data: data)
}

func clientFrame(_ opcode: WebSocketOpcode, _ text: String, fin: Bool = true) -> WebSocketFrame {
    clientFrame(opcode, Array(text.utf8), fin: fin)
}

private let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

private func machine(maxMessageSize: Int = 100, expiresAt: Double? = nil) -> WebSocketStateMachine {
    WebSocketStateMachine(
        settings: .init(
            pingInterval: .seconds(30), pongTimeout: .seconds(10), maxMessageSize: maxMessageSize,
            expiresAt: expiresAt),
        now: start)
}

private func text(_ action: WebSocketStateMachine.Action) -> String? {
    guard case .deliver(let buffer) = action else { return nil }
    return String(buffer: buffer)
}

@Suite("WebSocketStateMachine")
struct WebSocketStateMachineTests {
    @Test("a text frame is a message; fragments are joined, with control frames between them")
    func messagesAndFragments() {
        var m = machine()
        #expect(text(m.received(clientFrame(.text, "hello"), now: start)) == "hello")
        #expect(m.received(clientFrame(.text, "he", fin: false), now: start) == .none)
        #expect(m.received(clientFrame(.ping, "p"), now: start) == .sendPong(ByteBuffer(string: "p")))
        #expect(m.received(clientFrame(.continuation, "ll", fin: false), now: start) == .none)
        #expect(text(m.received(clientFrame(.continuation, "o"), now: start)) == "hello")
    }

    @Test("protocol errors close with 1002 and drop the connection once the close frame is written")
    func protocolErrors() {
        let cases: [(WebSocketFrame, String)] = [
            (clientFrame(.text, Array("x".utf8), masked: false), "client frames must be masked"),
            (clientFrame(.continuation, "x"), "continuation frame without a message"),
            (
                WebSocketFrame(
                    fin: true, rsv1: true, opcode: .text, maskKey: WebSocketMaskingKey([1, 2, 3, 4]), data: ByteBuffer()
                ),
                "reserved bits set without an extension"
            ),
            (clientFrame(WebSocketOpcode(encodedWebSocketOpcode: 0x3)!, "x"), "unknown opcode"),
        ]
        for (frame, reason) in cases {
            var m = machine()
            #expect(m.received(frame, now: start) == .sendCloseAndDrop(.protocolError(reason)))
            #expect(m.state == .dropping)
        }
        var m = machine()
        _ = m.received(clientFrame(.text, "a", fin: false), now: start)
        #expect(
            m.received(clientFrame(.text, "b"), now: start)
                == .sendCloseAndDrop(.protocolError("new message before the previous one ended")))
    }

    @Test("a reassembled message over max-message-size starts the closing handshake with 1009")
    func oversizedFragments() {
        var m = machine(maxMessageSize: 4)
        _ = m.received(clientFrame(.text, "abc", fin: false), now: start)
        #expect(m.received(clientFrame(.continuation, "de"), now: start) == .sendClose(.messageTooBig(limit: 4)))
        #expect(m.state == .closing(deadline: start + .seconds(10)))
    }

    @Test("binary frames are messages like text frames, fragments included")
    func binary() {
        var m = machine()
        #expect(text(m.received(clientFrame(.binary, Array("ab".utf8)), now: start)) == "ab")
        #expect(m.received(clientFrame(.binary, Array("c".utf8), fin: false), now: start) == .none)
        #expect(text(m.received(clientFrame(.continuation, Array("d".utf8)), now: start)) == "cd")
    }

    @Test("the peer's close is echoed with its code and the connection dropped; an invalid code becomes 1000")
    func peerCloses() {
        var m = machine()
        #expect(m.received(clientFrame(.connectionClose, [0x0F, 0xA1]), now: start) == .sendCloseAndDrop(.echo(4001)))
        var n = machine()
        #expect(n.received(clientFrame(.connectionClose, [0x03, 0xED]), now: start) == .sendCloseAndDrop(.echo(1000)))
        var o = machine()
        #expect(o.received(clientFrame(.connectionClose, []), now: start) == .sendCloseAndDrop(.echo(1000)))
    }

    @Test("after the server's close only the peer's close matters, and it ends the connection")
    func closingHandshake() {
        var m = machine()
        #expect(m.close(.shuttingDown, now: start) == .sendClose(.shuttingDown))
        #expect(m.close(.tooSlow, now: start) == .none, "one close frame only")
        #expect(m.received(clientFrame(.text, "late"), now: start) == .none)
        #expect(m.received(clientFrame(.connectionClose, [0x03, 0xE8]), now: start) == .drop(why: nil))
    }

    @Test("a closing socket that never answers is dropped at its deadline")
    func closeDeadline() {
        var m = machine()
        _ = m.close(.shuttingDown, now: start)
        #expect(m.tick(now: start + .seconds(9), wallClock: 0) == .none)
        #expect(m.tick(now: start + .seconds(10), wallClock: 0) == .drop(why: nil))
    }

    @Test("a silent client is pinged after ping-interval and dropped pong-timeout after the ping left")
    func pings() {
        var m = machine()
        #expect(m.tick(now: start + .seconds(29), wallClock: 0) == .none)
        #expect(m.tick(now: start + .seconds(30), wallClock: 0) == .sendPing)
        #expect(m.tick(now: start + .seconds(31), wallClock: 0) == .none, "one ping at a time")
        m.pingSent(now: start + .seconds(35))
        #expect(m.tick(now: start + .seconds(44), wallClock: 0) == .none, "the timeout runs from when it left")
        #expect(
            m.tick(now: start + .seconds(45), wallClock: 0)
                == .drop(why: "dropping socket that stopped answering pings"))
    }

    @Test("any frame from the client answers a ping")
    func anyFrameCountsAsAlive() {
        var m = machine()
        _ = m.tick(now: start + .seconds(30), wallClock: 0)
        m.pingSent(now: start + .seconds(30))
        _ = m.received(clientFrame(.text, "still here"), now: start + .seconds(31))
        #expect(m.tick(now: start + .seconds(45), wallClock: 0) == .none)
        #expect(m.tick(now: start + .seconds(61), wallClock: 0) == .sendPing)
    }

    @Test("a ping that cannot even leave within ping-interval plus pong-timeout drops the socket")
    func pingStuckInQueue() {
        var m = machine()
        _ = m.tick(now: start + .seconds(30), wallClock: 0)
        #expect(
            m.tick(now: start + .seconds(70), wallClock: 0)
                == .drop(why: "dropping socket whose ping could not be sent"))
    }

    @Test("the token's exp closes the socket with 3001")
    func expiry() {
        var m = machine(expiresAt: 2_000_000_000)
        #expect(m.tick(now: start, wallClock: 1_999_999_999.5) == .none)
        #expect(m.tick(now: start, wallClock: 2_000_000_000) == .sendClose(.jwtExpired))
    }

    @Test("the connection's end tears the socket down exactly once")
    func teardownOnce() {
        var m = machine()
        _ = m.received(clientFrame(.connectionClose, []), now: start)
        let first = m.connectionClosed()
        let second = m.connectionClosed()
        #expect(first && !second)
        #expect(m.received(clientFrame(.text, "x"), now: start) == .none)
    }
}
