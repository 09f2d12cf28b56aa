import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// The whole server, as a `Service`: the listener, the notifier, the JWKS fetcher (when a
/// `jwks-url` is set) and the front end, run by a `ServiceGroup` in that order, so that
/// shutdown goes the other way: sockets are closed first, then what they sent is delivered to
/// PostgreSQL, then the listener stops. With TLS, a `TLSReloader` comes last (stopped first):
/// SIGHUP reloads the certificate and key.
/// The tests `start()` and `shutdown()` it directly.
///
/// Data flows one way each: PostgreSQL → `Listener` → `ChannelHub` → event loops → sockets,
/// and socket → `Notifier` → PostgreSQL.
public final class Bridge: Service, Sendable {
    public let configuration: Configuration
    private let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let server: ServerContext
    private let services: [any Service]
    private let frontEnd: FrontEnd
    private let adminServer: AdminServer?
    private let tls: TLSContextStore?
    private let running = NIOLockedValueBox<(group: ServiceGroup, task: Task<Void, any Error>)?>(nil)

    public init(configuration: Configuration, logger: Logger, eventLoopThreads: Int = System.coreCount)
        throws(ConfigurationError)
    {
        self.configuration = configuration
        self.logger = logger
        let staticFiles = try configuration.server.rootPath.map { root throws(ConfigurationError) in
            try StaticFiles(root: root)
        }
        // Before any thread starts: a secret that is a broken JWK or JWK Set stops start-up.
        var configuredKeys = JWTKeySet.empty
        if let secret = configuration.jwtSecret {
            do {
                configuredKeys = try JWTKeySet(secret: secret)
            } catch {
                throw ConfigurationError("\(ConfigurationKey.jwtSecret.rawValue): \(error.reason)")
            }
        } else if configuration.jwks == nil {
            throw ConfigurationError(
                "\(ConfigurationKey.jwtSecret.rawValue) or \(ConfigurationKey.jwksURL.rawValue) is required")
        }
        let jwksClient = try configuration.jwks.map { settings throws(ConfigurationError) in
            (settings, try JWKSHTTPClient(settings: settings))
        }
        let keys = JWTKeyStore(
            configuredKeys: configuredKeys, audience: configuration.jwtAudience, fetchesKeys: jwksClient != nil)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, eventLoopThreads))
        self.group = group
        let fetcher = jwksClient.map { settings, client in
            JWKSFetcher(settings: settings, client: client, store: keys, group: group, logger: logger)
        }
        // Likewise a certificate and key that do not load or do not match.
        tls = try configuration.tls.map { settings throws(ConfigurationError) in
            try TLSContextStore(settings: settings)
        }
        let status = DatabaseStatus()
        let directory = DurableDirectory()
        let registry = ListenRegistry(status: status)
        let store =
            configuration.durable.isEnabled
            ? DurableStore(
                conninfo: configuration.databaseURI, settings: configuration.durable, status: status, logger: logger)
            : nil
        let presenceBook = configuration.presence.isEnabled ? PresenceBook(settings: configuration.presence) : nil
        let presence = presenceBook.map {
            PresenceWriter(conninfo: configuration.databaseURI, book: $0, status: status, logger: logger)
        }
        let hub = ChannelHub(
            group: group, registry: registry,
            window: (configuration.limits.maxLag, configuration.limits.maxLagDuration),
            routing: ListenChannelRouting(listenChannel: configuration.channels.listenChannel), store: store,
            presence: presenceBook)
        let revocations = Revocations(revoker: hub)
        // The listen channel is LISTENed for the server's whole life, sockets or not.
        registry.acquire([ChannelKey(configuration.channels.listenChannel)], awaiting: [], ready: {})
        let listener = Listener(
            conninfo: configuration.databaseURI, settings: configuration.listener,
            durableMode: configuration.durable.mode, directory: directory, revocations: revocations,
            presenceWatchers: presence == nil ? nil : hub, registry: registry, sink: hub,
            logger: logger)
        let notifier = Notifier(
            conninfo: configuration.databaseURI, settings: configuration.notifier,
            durable: configuration.durable.isEnabled, status: status, pausedWriters: hub, logger: logger)
        server = ServerContext(
            configuration: configuration, keys: keys, revocations: revocations, hub: hub, registry: registry,
            notifier: notifier,
            durableChannels: directory, presence: presence,
            staticFiles: staticFiles, tls: tls, logger: logger)
        frontEnd = FrontEnd(server: server, group: group)
        let server = self.server
        adminServer =
            configuration.metrics.port == nil
            ? nil : AdminServer(server: server, group: group, settings: configuration.metrics)
        for notice in configuration.notices { logger.notice("\(notice)") }
        // Presence after the notifier: stopped before it, once the sockets are closed.
        services =
            [listener, notifier] + (presence.map { [$0] } ?? []) + (store.map { [$0] } ?? [])
            + (fetcher.map { [$0] } ?? [])
            + (adminServer.map { [$0] } ?? []) + [frontEnd]
    }

    private func makeGroup() async -> ServiceGroup {
        var services = services
        if let tls {
            // SIGHUP is trapped here, before the front end listens: from the "listening" line
            // on, a SIGHUP reloads the certificate and never terminates the process.
            let signals = await UnixSignalsSequence(trapping: .sighup)
            services.append(TLSReloader(store: tls, signals: signals, logger: logger))
        }
        return ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) }, gracefulShutdownSignals: [], logger: logger))
    }

    public func run() async throws {
        do {
            try await makeGroup().run()
        } catch {
            await shutDownEventLoops()
            throw error
        }
        await shutDownEventLoops()
        logger.notice("stopped")
    }

    /// Starts every part in the background; returns the bound port once listening.
    @discardableResult
    public func start() async throws -> Int {
        let serviceGroup = await makeGroup()
        let task = Task { try await serviceGroup.run() }
        running.withLockedValue { $0 = (serviceGroup, task) }
        do {
            return try await frontEnd.bound.futureResult.get()
        } catch {
            _ = try? await task.value
            await shutDownEventLoops()
            throw error
        }
    }

    /// Stops accepting, closes every socket with 1001, sends what is still queued to
    /// PostgreSQL, and stops. Bounded by about 8 seconds in all.
    public func shutdown() async {
        guard
            let (serviceGroup, task) = running.withLockedValue({ running in
                defer { running = nil }; return running
            })
        else { return }
        await serviceGroup.triggerGracefulShutdown()
        _ = try? await task.value
        await shutDownEventLoops()
        logger.notice("stopped")
    }

    /// Waits until the loops' threads have ended: their selectors and buffers are freed
    /// before the process exits (LeakSanitizer reported them when the shutdown was not awaited).
    private func shutDownEventLoops() async {
        try? await group.shutdownGracefully()
    }

    // MARK: - Introspection (tests, health)

    /// The listener's own answer to `SELECT pg_listening_channels()`.
    public func listeningChannels() async throws -> [String] {
        try await server.registry.query("SELECT pg_listening_channels()").compactMap { $0 }
    }

    public var isDatabaseUp: Bool { server.status.isUp }

    /// Returns once the listener is connected and LISTENs every channel in use.
    public func waitUntilDatabaseUp() async {
        await server.status.waitUntilUp()
    }

    public var openConnections: Int { server.slots.count }

    /// The port of `/metrics` and the admin endpoints, nil when `metrics-port` is not set.
    public func metricsPort() async throws -> Int? {
        guard let adminServer else { return nil }
        return try await adminServer.bound.futureResult.get()
    }

    /// What the delivery logs did, summed over the event loops.
    public func deliveryCounters() async -> DeliveryCounters {
        await MetricsReport.gather(from: server).shards.counters
    }

    public var queuedMessages: Int { server.notifier.queuedCount }
}
