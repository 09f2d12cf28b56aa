import Logging

extension SessionEnvironment {
    /// With `meta-channel` set, NOTIFYs `ConnectionOpen` or `ConnectionClose` for a socket (a
    /// WebSocket or an event stream): `channel` is the meta channel, `payload` the socket's
    /// channels joined by commas, `claims` the token's.
    func sendMetaEvent(
        _ event: Envelope.Event, grant: Grant, claimsPrefix: [UInt8], lane: Int, logger: SocketLog
    ) {
        guard let meta = channels.metaChannel else { return }
        let envelope = Envelope.encode(
            event: event, channel: meta, payload: grant.channels.joined(separator: ","),
            claimsPrefix: claimsPrefix, deliveredAtMicroseconds: UniqueTimestamps.shared.next())
        guard envelope.count <= Envelope.maxPayloadBytes else {
            logger.log(.warning, "meta event too large for NOTIFY, not sent", [.event: "\(event.rawValue)"])
            return
        }
        let notification = (channels.notifyChannel(for: meta), envelope)
        publisher.submitEvent(OutgoingMessage(notifications: [notification], sender: nil), lane: lane)
    }
}
