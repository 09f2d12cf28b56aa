import NIOConcurrencyHelpers

/// Which channels are durable, for the sockets that publish: the listener's connection
/// writes it (loaded when it connects, kept current by the control channel), the event loops
/// read it once per client message. Empty while durable channels are off.
final class DurableDirectory: Sendable {
    private let channels = NIOLockedValueBox<Set<ChannelKey>>([])

    func contains(_ channel: ChannelKey) -> Bool {
        channels.withLockedValue { $0.contains(channel) }
    }

    func replace(with channels: Set<ChannelKey>) {
        self.channels.withLockedValue { $0 = channels }
    }
}
