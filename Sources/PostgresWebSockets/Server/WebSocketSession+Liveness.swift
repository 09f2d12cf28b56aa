import Logging
import NIOCore
import NIOWebSocket

/// Timers of an open socket: token expiry, pings to idle clients, the close deadline.
/// The loop's shard calls `tick` about once a second for every socket.
extension WebSocketSession {
    func tick(now: NIODeadline, wallClock: Double) {
        switch state {
        case .open:
            let config = server.configuration
            if let expiresAt, wallClock >= expiresAt {
                close(code: CloseCode.jwtExpired, reason: "JWT expired")
            } else {
                checkLiveness(now: now, config: config)
            }
        case .closing:
            if let closeDeadline, now >= closeDeadline { abort() }
        case .pending, .closed:
            break
        }
    }

    enum PingState {
        case idle
        /// Written, still queued behind earlier frames in the server.
        case queued(since: NIODeadline)
        /// Handed to the kernel: the pong timeout runs from here, so a reader that is merely
        /// behind on a burst is not mistaken for a dead one.
        case sent(at: NIODeadline)
    }

    /// Pings a socket silent for `ping-interval`; drops one that does not answer within
    /// `pong-timeout` of the ping leaving, or whose ping cannot even leave in that time.
    private func checkLiveness(now: NIODeadline, config: Configuration) {
        switch ping {
        case .idle:
            guard now - lastInbound >= .fromSeconds(config.pingInterval), let context else { return }
            ping = .queued(since: now)
            let frame = WebSocketFrames.frame(
                opcode: .ping, payload: ByteBuffer(), allocator: context.channel.allocator)
            let written = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(wrapOutboundOut(frame), promise: written)
            written.futureResult.assumeIsolated().whenSuccess { [self] in
                if case .queued = ping { ping = .sent(at: .now()) }
            }
        case .queued(let since):
            if now - since >= .fromSeconds(config.pingInterval + config.pongTimeout) {
                server.logger.info("dropping socket whose ping could not be sent")
                abort()
            }
        case .sent(let at):
            if now - at >= .fromSeconds(config.pongTimeout) {
                server.logger.info("dropping socket that stopped answering pings")
                abort()
            }
        }
    }
}

extension TimeAmount {
    static func fromSeconds(_ seconds: Double) -> TimeAmount {
        .nanoseconds(Int64(seconds * 1e9))
    }
}
