import NIOCore

/// postgres-websockets' own protocol: a text (or UTF-8 binary) message becomes one NOTIFY per
/// channel of the socket, plus audit copies; what PostgreSQL refuses closes the socket.
extension WebSocketSession {
    func received(message: ByteBuffer) {
        let limits = environment.limits
        guard grant.mode.contains(.write) else { return close(.readOnly) }
        guard message.readableBytes <= limits.maxMessageSize else {
            return close(.messageTooBig(limit: limits.maxMessageSize))
        }
        let deliveredAt = UniqueTimestamps.shared.next()
        let settings = environment.channels
        let audit = settings.auditChannel
        var notifications: [(channel: String, payload: [UInt8])] = []
        notifications.reserveCapacity(grant.channels.count * (audit == nil ? 1 : 2))
        let fits = message.withUnsafeReadableBytes { payload -> Bool in
            for channel in grant.channels {
                let envelope = Envelope.encode(
                    event: .websocketMessage, channel: channel, payload: payload,
                    claimsPrefix: claimsPrefix, deliveredAtMicroseconds: deliveredAt)
                let destination = destination(of: channel)
                guard envelope.count <= destination.maxEnvelope else { return false }
                notifications.append((destination.channel, envelope))
                if let audit { notifications.append((audit, envelope)) }
            }
            return true
        }
        guard fits else { return close(.envelopeTooBig) }
        publish(OutgoingMessage(notifications: notifications, sender: RawSender(handle: handle)))
    }
}

/// Closes the raw socket whose message PostgreSQL refused.
private final class RawSender: MessageSender {
    let handle: SessionHandle

    init(handle: SessionHandle) {
        self.handle = handle
    }

    func messageRejected(reason: String) {
        handle.onLoop { $0.close(.rejectedByDatabase(reason)) }
    }

    func messageCommitted(offset: UInt64?) {}
}
