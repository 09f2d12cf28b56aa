import NIOCore
import NIOWebSocket

/// The WebSocket protocol of one open socket (RFC 6455 as this server speaks it): frames in,
/// fragments, pings both ways, the token's expiry and the closing handshake. Each event
/// returns the action the `WebSocketSession` carries out; no I/O happens here, so every
/// rule can be tested without a socket.
struct WebSocketStateMachine {
    struct Settings {
        var pingInterval: TimeAmount
        var pongTimeout: TimeAmount
        var maxMessageSize: Int
        /// The token's `exp`, in Unix seconds.
        var expiresAt: Double?
    }

    enum Ping: Equatable {
        case idle
        /// Written, still queued behind earlier frames in the server.
        case queued(since: NIODeadline)
        /// Handed to the kernel: the pong timeout runs from here, so a reader that is merely
        /// behind on a burst is not mistaken for a dead one.
        case sent(at: NIODeadline)
    }

    enum State: Equatable {
        /// `fragments`: the text message being reassembled, if any.
        case open(fragments: ByteBuffer?, ping: Ping)
        /// A close frame went out; the peer has until `deadline` to answer it.
        case closing(deadline: NIODeadline)
        /// The connection is being dropped: nothing more is read or written.
        case dropping
        /// The connection is gone and the socket torn down.
        case closed
    }

    enum Action: Equatable {
        case none
        /// A complete text message from the client.
        case deliver(ByteBuffer)
        case sendPong(ByteBuffer)
        case sendPing
        /// Send a close frame and wait for the peer's answer (until the close deadline).
        case sendClose(CloseReason)
        /// Send a close frame, then drop the connection once it is written: for errors after
        /// which the peer's frames cannot be read, and for the answer to the peer's close.
        case sendCloseAndDrop(CloseReason)
        /// Drop the connection now; `why` is logged when present.
        case drop(why: String?)
    }

    private(set) var settings: Settings
    private(set) var state = State.open(fragments: nil, ping: .idle)
    private var lastInbound: NIODeadline

    init(settings: Settings, now: NIODeadline) {
        self.settings = settings
        self.lastInbound = now
    }

    var isOpen: Bool {
        if case .open = state { return true }
        return false
    }

    // MARK: - Frames from the client

    mutating func received(_ frame: WebSocketFrame, now: NIODeadline) -> Action {
        lastInbound = now
        switch state {
        case .dropping, .closed:
            return .none
        case .open(let fragments, _):
            state = .open(fragments: fragments, ping: .idle)  // any frame proves the client alive
        case .closing:
            break
        }
        guard frame.maskKey != nil else { return fail(.protocolError("client frames must be masked")) }
        guard !frame.rsv1, !frame.rsv2, !frame.rsv3 else {
            return fail(.protocolError("reserved bits set without an extension"))
        }
        if frame.opcode == .connectionClose { return receivedClose(frame) }
        guard case .open(let fragments, _) = state else { return .none }  // closing: only a close matters
        switch frame.opcode {
        case .ping:
            return .sendPong(frame.unmaskedPayload)
        case .pong:
            return .none
        case .text, .binary:
            // Binary frames holding UTF-8 are messages too, as postgres-websockets takes them;
            // the content is checked (1007) with the text's.
            guard fragments == nil else { return fail(.protocolError("new message before the previous one ended")) }
            if frame.fin { return .deliver(frame.unmaskedPayload) }
            state = .open(fragments: frame.unmaskedPayload, ping: .idle)
            return .none
        case .continuation:
            guard var message = fragments else { return fail(.protocolError("continuation frame without a message")) }
            var data = frame.unmaskedPayload
            guard message.readableBytes + data.readableBytes <= settings.maxMessageSize else {
                return close(.messageTooBig(limit: settings.maxMessageSize), now: now)
            }
            state = .open(fragments: nil, ping: .idle)  // drop the stored reference so the append does not copy
            message.writeBuffer(&data)
            if frame.fin { return .deliver(message) }
            state = .open(fragments: message, ping: .idle)
            return .none
        default:
            return fail(.protocolError("unknown opcode"))
        }
    }

    private mutating func receivedClose(_ frame: WebSocketFrame) -> Action {
        if case .closing = state {
            state = .dropping
            return .drop(why: nil)  // the answer to our close frame
        }
        var data = frame.unmaskedPayload
        var code = CloseReason.normalCode
        if let peerCode = data.readInteger(as: UInt16.self), CloseReason.isValidFromPeer(peerCode) {
            code = peerCode
        }
        state = .dropping
        return .sendCloseAndDrop(.echo(code))
    }

    // MARK: - The server closes

    /// Starts the closing handshake.
    mutating func close(_ reason: CloseReason, now: NIODeadline) -> Action {
        guard isOpen else { return .none }
        state = .closing(deadline: now + settings.pongTimeout)
        return .sendClose(reason)
    }

    /// Closes for an error after which the peer's frames cannot be trusted.
    mutating func fail(_ reason: CloseReason) -> Action {
        switch state {
        case .open:
            state = .dropping
            return .sendCloseAndDrop(reason)
        case .closing:
            state = .dropping
            return .drop(why: nil)
        case .dropping, .closed:
            return .none
        }
    }

    // MARK: - Time

    /// The loop's timer, about once a second.
    mutating func tick(now: NIODeadline, wallClock: Double) -> Action {
        switch state {
        case .open(let fragments, let ping):
            if let expiresAt = settings.expiresAt, wallClock >= expiresAt {
                return close(.jwtExpired, now: now)
            }
            switch ping {
            case .idle:
                guard now - lastInbound >= settings.pingInterval else { return .none }
                state = .open(fragments: fragments, ping: .queued(since: now))
                return .sendPing
            case .queued(let since):
                guard now - since >= settings.pingInterval + settings.pongTimeout else { return .none }
                state = .dropping
                return .drop(why: "dropping socket whose ping could not be sent")
            case .sent(let at):
                guard now - at >= settings.pongTimeout else { return .none }
                state = .dropping
                return .drop(why: "dropping socket that stopped answering pings")
            }
        case .closing(let deadline):
            guard now >= deadline else { return .none }
            state = .dropping
            return .drop(why: nil)  // it had its chance to read what it was sent
        case .dropping, .closed:
            return .none
        }
    }

    /// A `pgws.v1` refresh: the new token's `exp` replaces the old one.
    mutating func tokenRefreshed(expiresAt: Double?) {
        settings.expiresAt = expiresAt
    }

    /// The ping left the server (its write completed).
    mutating func pingSent(now: NIODeadline) {
        if case .open(let fragments, .queued) = state {
            state = .open(fragments: fragments, ping: .sent(at: now))
        }
    }

    /// The connection is gone. True the first time: the socket must be torn down.
    mutating func connectionClosed() -> Bool {
        defer { state = .closed }
        return state != .closed
    }
}
