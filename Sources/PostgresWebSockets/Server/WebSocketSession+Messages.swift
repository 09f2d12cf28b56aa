import Logging
import NIOCore
import NIOWebSocket

/// What a socket sends: envelopes, the NOTIFY queue and its flow control, meta events.
extension WebSocketSession {
    /// A complete text message from the client: becomes one NOTIFY per channel (plus audit).
    func received(message: ByteBuffer) {
        let config = server.configuration
        guard grant.mode.contains(.write) else {
            close(code: CloseCode.policyViolation, reason: "socket is read-only: its JWT mode is r")
            return
        }
        guard message.readableBytes <= config.maxMessageSize else {
            close(code: CloseCode.messageTooBig, reason: "message exceeds \(config.maxMessageSize) bytes")
            return
        }
        guard isValidUTF8(message.readableBytesView) else {
            close(code: CloseCode.invalidUTF8, reason: "text frame is not valid UTF-8")
            return
        }
        let deliveredAt = DeliveryClock.shared.nextMicroseconds()
        var notifications: [(channel: String, payload: [UInt8])] = []
        notifications.reserveCapacity(grant.channels.count * (config.auditChannel == nil ? 1 : 2))
        let fits = message.withUnsafeReadableBytes { payload -> Bool in
            for channel in grant.channels {
                let envelope = Envelope.encode(
                    event: .websocketMessage, channel: channel, payload: payload,
                    claimsPrefix: claimsPrefix, deliveredAtMicroseconds: deliveredAt)
                guard envelope.count <= Envelope.maxPayloadBytes else { return false }
                notifications.append((channel, envelope))
                if let audit = config.auditChannel {
                    notifications.append((audit, envelope))
                }
            }
            return true
        }
        guard fits else {
            close(
                code: CloseCode.messageTooBig,
                reason:
                    "message too large: its envelope exceeds PostgreSQL's \(Envelope.maxPayloadBytes)-byte NOTIFY limit"
            )
            return
        }
        let sender = SessionHandle(session: self, eventLoop: context!.eventLoop)
        submit(OutgoingMessage(notifications: notifications, sender: sender))
    }

    // MARK: - Flow control towards PostgreSQL

    private func submit(_ message: OutgoingMessage) {
        guard held.isEmpty else {
            held.append(message)  // keeps the order behind what is already waiting
            return
        }
        // While PostgreSQL is up but slower than the writers, they are slowed down (no more
        // reading); while it is down, messages queue up to the limit and then are refused.
        let databaseUp = server.notifier.isDatabaseUp
        switch server.notifier.submit(message, lane: id) {
        case .accepted:
            break
        case .congested:
            if databaseUp { pauseReading() }
        case .full where databaseUp:
            held.append(message)
            pauseReading()
        case .full:
            close(code: CloseCode.tryAgainLater, reason: "database unavailable")
        }
    }

    /// Stops reading from the client: TCP flow control then slows the writer down.
    private func pauseReading() {
        guard !readingPaused, let context else { return }
        readingPaused = true
        _ = context.channel.setOption(.autoRead, value: false)
        shard?.paused(self)
    }

    /// The queue to PostgreSQL drained, or the database went down: send what was held, then
    /// read again unless the queue is congested once more while PostgreSQL is up.
    func resumeReading() {
        guard readingPaused, state == .open || state == .closing, let context else { return }
        let databaseUp = server.notifier.isDatabaseUp
        while let message = held.first {
            switch server.notifier.submit(message, lane: id) {
            case .accepted:
                held.removeFirst()
            case .congested:
                held.removeFirst()
                if databaseUp { return }  // stay paused until the next relief
            case .full where databaseUp:
                return
            case .full:
                held = []
                close(code: CloseCode.tryAgainLater, reason: "database unavailable")
                return
            }
        }
        readingPaused = false
        shard?.resumed(self)
        _ = context.channel.setOption(.autoRead, value: true)
        context.read()
    }

    func sendMetaEvent(_ event: Envelope.Event) {
        guard let meta = server.configuration.metaChannel else { return }
        let envelope = Envelope.encode(
            event: event, channel: meta, payload: grant.channels.joined(separator: ","),
            claimsPrefix: claimsPrefix, deliveredAtMicroseconds: DeliveryClock.shared.nextMicroseconds())
        guard envelope.count <= Envelope.maxPayloadBytes else {
            server.logger.warning("meta event too large for NOTIFY, not sent", metadata: ["event": "\(event.rawValue)"])
            return
        }
        server.notifier.submitEvent(OutgoingMessage(notifications: [(meta, envelope)], sender: nil), lane: id)
    }

    func rejectedByDatabase(reason: String) {
        close(code: CloseCode.policyViolation, reason: reason)
    }
}

/// Lets a database thread close the socket whose message PostgreSQL refused.
private struct SessionHandle: MessageSender {
    let session: NIOLoopBound<WebSocketSession>

    init(session: WebSocketSession, eventLoop: any EventLoop) {
        self.session = NIOLoopBound(session, eventLoop: eventLoop)
    }

    func messageRejected(reason: String) {
        let session = self.session
        session.eventLoop.execute { session.value.rejectedByDatabase(reason: reason) }
    }
}

/// UTF-8 validation without building a String.
func isValidUTF8(_ bytes: ByteBufferView) -> Bool {
    var iterator = bytes.makeIterator()
    var decoder = Unicode.UTF8()
    while true {
        switch decoder.decode(&iterator) {
        case .scalarValue: continue
        case .emptyInput: return true
        case .error: return false
        }
    }
}
