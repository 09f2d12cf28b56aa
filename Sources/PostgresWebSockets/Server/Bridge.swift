import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import NIOConcurrencyHelpers

/// The whole server: WebSocket front end, listener, notifier. Run it as a `Service` in a
/// `ServiceGroup`, or `start()` and `shutdown()` it directly (as the tests do).
public final class Bridge: Service, Sendable {
    public let configuration: Configuration
    private let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let server: ServerContext
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)

    public init(configuration: Configuration, logger: Logger, eventLoopThreads: Int = System.coreCount)
        throws(ConfigurationError)
    {
        self.configuration = configuration
        self.logger = logger
        let staticFiles = try configuration.rootPath.map { root throws(ConfigurationError) in
            try StaticFiles(root: root)
        }
        // Before any thread starts: a secret that is a broken JWK or JWK Set stops start-up.
        let verifier: JWTVerifier
        do {
            verifier = JWTVerifier(keys: try JWTKeySet(secret: configuration.jwtSecret))
        } catch {
            throw ConfigurationError("\(ConfigurationKey.jwtSecret.rawValue): \(error.reason)")
        }
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, eventLoopThreads))
        let hub = ChannelHub(group: group)
        let notifier = Notifier(
            conninfo: configuration.databaseURI, poolSize: configuration.poolSize,
            maxPending: configuration.maxPendingMessages, logger: logger)
        let budget = hub.budget
        let listener = Listener(
            conninfo: configuration.databaseURI, logger: logger, isBackedUp: { budget.isExhausted }
        ) { batch in
            hub.dispatch(batch)
        }
        budget.whenReleased { listener.resume() }
        listener.observeStatus { up in
            notifier.setDatabaseUp(up)
            // Paused writers wait for a queue that will not drain now: they are told instead.
            if !up { hub.resumePausedSessions() }
        }
        notifier.whenRelieved { hub.resumePausedSessions() }
        server = ServerContext(
            configuration: configuration, verifier: verifier, hub: hub, listener: listener, notifier: notifier,
            staticFiles: staticFiles, logger: logger)
    }

    /// The port the server listens on, once started.
    public var port: Int? {
        channel.withLockedValue { $0?.localAddress?.port }
    }

    /// Starts the database threads and binds the listening socket. Returns the bound port.
    @discardableResult
    public func start() async throws -> Int {
        server.listener.start()
        server.notifier.start()
        let config = configuration
        // Once a second (sooner for short ping settings) every socket's timers are checked:
        // cheaper for many idle sockets than a timer each; `exp` is enforced to the second.
        let sweep = min(1, config.pingInterval / 2, config.pongTimeout / 2)
        await server.hub.forEachShard { $0.startSweeping(every: .milliseconds(max(10, Int64(sweep * 1000)))) }
        let bound: any Channel
        do {
            bound = try await BridgeServer.bind(server: server, group: group)
        } catch {
            await stopBackground()
            throw error
        }
        channel.withLockedValue { $0 = bound }
        let port = bound.localAddress?.port ?? config.port
        logger.notice(
            "postgres-websockets listening",
            metadata: [
                "host": "\(config.host)", "port": "\(port)",
                "audit_channel": "\(config.auditChannel ?? "-")", "meta_channel": "\(config.metaChannel ?? "-")",
                "pool_size": "\(config.poolSize)",
            ])
        return port
    }

    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        await shutdown()
    }

    /// Stops accepting, closes every socket with 1001, sends what is still queued to
    /// PostgreSQL, and stops. Bounded by about 8 seconds in all.
    public func shutdown() async {
        logger.notice("shutting down")
        let listening = channel.withLockedValue { channel -> (any Channel)? in
            defer { channel = nil }
            return channel
        }
        try? await listening?.close()
        await server.hub.forEachShard { $0.closeAll(code: CloseCode.goingAway, reason: "server shutting down") }
        let closeDeadline = ContinuousClock.now + .seconds(2)
        while server.limiter.count > 0, ContinuousClock.now < closeDeadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        await server.hub.forEachShard { $0.abortAll() }
        if !(await server.notifier.drain(timeout: 5)) {
            logger.error(
                "shutting down with messages not sent to PostgreSQL",
                metadata: ["messages": "\(server.notifier.queuedCount)"])
        }
        await stopBackground()
        logger.notice("stopped")
    }

    private func stopBackground() async {
        await server.hub.forEachShard { $0.stopSweeping() }
        server.notifier.stop()
        server.listener.stop()
        try? await group.shutdownGracefully()
    }

    // MARK: - Introspection (tests, health)

    /// The listener's own answer to `SELECT pg_listening_channels()`.
    public func listeningChannels() async throws -> [String] {
        try await server.listener.query("SELECT pg_listening_channels()").compactMap { $0 }
    }

    public var isDatabaseUp: Bool { server.listener.isUp }

    /// Returns once the listener is connected and LISTENs every channel in use.
    public func waitUntilDatabaseUp() async {
        await server.listener.waitUntilUp()
    }

    public var openConnections: Int { server.limiter.count }

    public var queuedMessages: Int { server.notifier.queuedCount }
}
