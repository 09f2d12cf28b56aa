import Logging
import NIOCore
import Synchronization

/// What every connection handler needs, shared by all of them.
final class ServerContext: Sendable {
    let configuration: Configuration
    let handshake: Handshake
    let hub: ChannelHub
    let registry: ListenRegistry
    let status: DatabaseStatus
    let notifier: Notifier
    let slots: ConnectionSlots
    let staticFiles: StaticFiles?
    /// Set when the port speaks TLS: the context each new connection is served with.
    let tls: TLSContextStore?
    let logger: Logger
    let sessionEnvironment: SessionEnvironment
    let handshakeOutcomes = HandshakeOutcomes()
    let presence: PresenceWriter?
    private let nextSessionID = Atomic<Int>(0)

    init(
        configuration: Configuration, keys: JWTKeyStore, revocations: Revocations = Revocations(), hub: ChannelHub,
        registry: ListenRegistry,
        notifier: Notifier, durableChannels: DurableDirectory, presence: PresenceWriter? = nil,
        staticFiles: StaticFiles?, tls: TLSContextStore?, logger: Logger
    ) {
        self.configuration = configuration
        self.presence = presence
        self.handshake = Handshake(
            keys: keys,
            allowedOrigins: configuration.server.allowedOrigins.map { Set($0.map { $0.lowercased() }) },
            revocations: revocations)
        self.hub = hub
        self.registry = registry
        self.status = registry.status
        self.notifier = notifier
        self.slots = ConnectionSlots(limit: configuration.limits.maxConnections)
        self.staticFiles = staticFiles
        self.tls = tls
        self.logger = logger
        self.sessionEnvironment = SessionEnvironment(
            publisher: notifier, channels: configuration.channels, limits: configuration.limits, logger: logger,
            keys: keys, offsets: hub.offsets, durableChannels: durableChannels, revocations: revocations,
            presence: presence)
    }

    func makeSession(_ pending: HTTPHandler.PendingUpgrade, shard: LoopShard) -> WebSocketSession {
        WebSocketSession(
            id: nextSessionID.wrappingAdd(1, ordering: .relaxed).newValue, grant: pending.authorized.grant,
            token: pending.authorized.token, encoding: pending.authorized.encoding, admission: pending.admission,
            shard: shard,
            environment: sessionEnvironment)
    }

    func makeEventStream(_ pending: HTTPHandler.PendingUpgrade, shard: LoopShard) -> EventStreamSession {
        EventStreamSession(
            id: nextSessionID.wrappingAdd(1, ordering: .relaxed).newValue, grant: pending.authorized.grant,
            token: pending.authorized.token, lastEventID: pending.lastEventID, admission: pending.admission,
            shard: shard, environment: sessionEnvironment)
    }

    func healthReport() -> HealthReport {
        HealthReport(
            databaseUp: status.isUp, connections: slots.count, listening: registry.listeningCount,
            queued: notifier.queuedCount)
    }
}
