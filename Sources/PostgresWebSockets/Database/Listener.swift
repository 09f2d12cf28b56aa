import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import Synchronization

/// The one PostgreSQL session that LISTENs for the whole server, as a `Service`.
///
/// Its thread sleeps in poll(2) on the libpq socket, hands every notification to the sink,
/// carries out the `ListenRegistry`'s commands, and reconnects forever with backoff; after a
/// reconnect it LISTENs every held channel again before the database counts as up.
final class Listener<Sink: NotificationSink>: Service, NotificationProducer, Sendable {
    /// Notifications handed to the sink at once; more are delivered in further batches.
    static var maxDispatchBatch: Int { 512 }

    let registry: ListenRegistry
    let sink: Sink
    let settings: ListenerSettings
    let conninfo: String
    /// Whether the server uses the `pgws` schema (durable channels).
    let durableMode: DurableSchema.Mode
    /// Where it publishes which channels are durable.
    let directory: DurableDirectory
    /// The revocations in force, loaded on every connection and kept current by `pgws:revoke`.
    let revocations: Revocations
    /// With presence on: who is told of joins and leaves (`pgws:presence`).
    let presenceWatchers: (any PresenceWatchers)?
    let logger: Logger
    /// False while the sink is full: the thread leaves PostgreSQL's socket unread.
    private let demand = Atomic<Bool>(true)

    init(
        conninfo: String, settings: ListenerSettings, durableMode: DurableSchema.Mode = .off,
        directory: DurableDirectory = DurableDirectory(), revocations: Revocations = Revocations(),
        presenceWatchers: (any PresenceWatchers)? = nil, registry: ListenRegistry, sink: Sink, logger: Logger
    ) {
        self.conninfo = conninfo
        self.presenceWatchers = presenceWatchers
        self.revocations = revocations
        self.durableMode = durableMode
        self.directory = directory
        self.settings = settings
        self.registry = registry
        self.sink = sink
        self.logger = logger
    }

    /// Throws when the start-up attempts (`retries`) ran out before a first connection.
    func run() async throws {
        let outcome = NIOLockedValueBox<String?>(nil)
        await runServiceThread(name: "pgws-listener", stop: registry.stop) { [self] in
            var loop = ListenerLoop(listener: self)
            loop.run()
            outcome.withLockedValue { $0 = loop.gaveUp }
        }
        if let reason = outcome.withLockedValue({ $0 }) {
            logger.log(.critical, "giving up", [.database: "unavailable", .error: "\(reason)"])
            throw DatabaseError.connection(reason)
        }
    }

    func produceMore() {
        demand.store(true, ordering: .sequentiallyConsistent)
        registry.wake.signal()
    }

    var hasDemand: Bool { demand.load(ordering: .sequentiallyConsistent) }

    /// Hands a batch to the sink, on the listener thread.
    func deliver(_ batch: Sink.Batch) {
        // Cleared before the hand-over: the sink may call `produceMore` before `receive`
        // even returns, and that call must win.
        demand.store(false, ordering: .sequentiallyConsistent)
        if sink.receive(batch, from: self) == .more {
            demand.store(true, ordering: .sequentiallyConsistent)
        }
    }
}
