import CLibPQ
import Logging
import NIOCore
import NIOWebSocket

#if canImport(Glibc)
    import Glibc
    import NIOConcurrencyHelpers
#endif

/// The one PostgreSQL session that LISTENs for the whole server.
///
/// Sockets `acquire` channels and `release` them; the listener keeps PostgreSQL's set of
/// LISTENed channels equal to the acquired ones (LISTEN on the first, UNLISTEN after the
/// last), in batches of statements sent in one round trip. It runs on its own thread,
/// sleeping in poll(2) on the libpq socket, and reconnects forever with backoff; after a
/// reconnect it LISTENs every acquired channel again before it reports the database up.
public final class Listener: Sendable {
    /// Delay before an idle connection is probed, and how long a probe may go unanswered
    /// (with nothing at all received) before the connection counts as lost.
    static let probeAfterIdle = 0.25
    static let probeTimeout = 0.75
    /// Notifications handed to the hub at once; more are delivered in further batches.
    static let maxDispatchBatch = 512
    /// Statements per LISTEN/UNLISTEN round trip.
    static let maxChannelCommands = 1000

    private struct Waiter {
        let channels: [ChannelKey]
        let ready: @Sendable () -> Void
    }

    struct Query {
        let sql: String
        let completion: @Sendable (Result<[String?], DatabaseError>) -> Void
    }

    private struct State {
        var wanted: [ChannelKey: Int] = [:]
        /// Channels whose reference count went to or from zero since the connection last
        /// looked: the only ones that may need a LISTEN or UNLISTEN.
        var dirty: Set<ChannelKey> = []
        /// Channels PostgreSQL has acknowledged on the current connection.
        var confirmed: Set<ChannelKey> = []
        var waiters: [Waiter] = []
        var queries: [Query] = []
        var isUp = false
        var stopping = false
        var statusObservers: [@Sendable (Bool) -> Void] = []
        var upWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let conninfo: String
    private let logger: Logger
    private let onNotifications: @Sendable ([Notification]) -> Void
    private let isBackedUp: @Sendable () -> Bool
    private let state = NIOLockedValueBox(State())
    private let wake = WakeSignal()

    /// - Parameters:
    ///   - isBackedUp: whether the event loops are too far behind to take more notifications;
    ///     while it holds, the listener leaves its socket unread. Call `resume()` when it ends.
    ///   - onNotifications: receives every batch of notifications, on the listener thread.
    public init(
        conninfo: String, logger: Logger, isBackedUp: @escaping @Sendable () -> Bool = { false },
        onNotifications: @escaping @Sendable ([Notification]) -> Void
    ) {
        self.conninfo = conninfo
        self.logger = logger
        self.isBackedUp = isBackedUp
        self.onNotifications = onNotifications
    }

    /// Wakes the listener after the event loops caught up.
    public func resume() {
        wake.signal()
    }

    public func start() {
        startBackgroundThread(name: "pgws-listener") { [self] in
            var loop = ListenerLoop(listener: self)
            loop.run()
        }
    }

    public func stop() {
        state.withLockedValue { $0.stopping = true }
        wake.signal()
    }

    /// Whether the listener is connected and LISTENs every acquired channel.
    public var isUp: Bool { state.withLockedValue { $0.isUp } }

    /// Number of channels PostgreSQL has acknowledged LISTENing on.
    public var listeningCount: Int { state.withLockedValue { $0.confirmed.count } }

    /// Calls `observer` (on the listener thread) whenever the database goes up or down.
    public func observeStatus(_ observer: @escaping @Sendable (Bool) -> Void) {
        state.withLockedValue { $0.statusObservers.append(observer) }
    }

    /// Returns once the listener is connected and LISTENs every acquired channel.
    public func waitUntilUp() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let isUp = state.withLockedValue { state -> Bool in
                if !state.isUp { state.upWaiters.append(continuation) }
                return state.isUp
            }
            if isUp { continuation.resume() }
        }
    }

    /// Adds a reference to each channel; calls `ready` once PostgreSQL LISTENs on all of
    /// them, or at once while the database is down (the channels are LISTENed on reconnect).
    public func acquire(_ names: [String], ready: @escaping @Sendable () -> Void) {
        let channels = names.map(ChannelKey.init)
        let (isReady, needsSync) = state.withLockedValue { state -> (Bool, Bool) in
            var needsSync = false
            var firstReference = false
            for channel in channels {
                let count = state.wanted[channel, default: 0]
                state.wanted[channel] = count + 1
                if count == 0 {
                    state.dirty.insert(channel)
                    needsSync = true
                    firstReference = true
                }
            }
            // A channel nobody held may be on its way out (UNLISTEN sent, not yet answered):
            // its socket waits for the listener to look at it again.
            let isReady = !state.isUp || (!firstReference && channels.allSatisfy { state.confirmed.contains($0) })
            if !isReady { state.waiters.append(Waiter(channels: channels, ready: ready)) }
            return (isReady, needsSync)
        }
        if needsSync { wake.signal() }
        if isReady { ready() }
    }

    public func release(_ names: [String]) {
        let channels = names.map(ChannelKey.init)
        let needsSync = state.withLockedValue { state -> Bool in
            var needsSync = false
            for channel in channels {
                guard let count = state.wanted[channel] else { continue }
                if count <= 1 {
                    state.wanted[channel] = nil
                    state.dirty.insert(channel)
                    needsSync = true
                } else {
                    state.wanted[channel] = count - 1
                }
            }
            return needsSync
        }
        if needsSync { wake.signal() }
    }

    /// Runs a one-column query on the listener's own session, e.g.
    /// `SELECT pg_listening_channels()`, which only this session can answer.
    public func query(_ sql: String) async throws -> [String?] {
        try await withCheckedThrowingContinuation { continuation in
            let query = Query(sql: sql) { continuation.resume(with: $0.mapError { $0 as any Error }) }
            let accepted = state.withLockedValue { state -> Bool in
                guard !state.stopping else { return false }
                state.queries.append(query)
                return true
            }
            if accepted {
                wake.signal()
            } else {
                continuation.resume(throwing: DatabaseError.connection("listener stopped"))
            }
        }
    }

    // MARK: - Used by the listener thread

    struct Work {
        var listen: [ChannelKey] = []
        var unlisten: [ChannelKey] = []
        var query: Query? = nil
        var stopping = false
        /// Changed channels that needed no command (acquired again before their UNLISTEN):
        /// sockets waiting for them can be told now.
        var settled = false
    }

    /// What the connection must do next, given the channels it LISTENs on now. Looks only
    /// at channels that changed, so its cost does not grow with the channels in use.
    func nextWork(listening: Set<ChannelKey>) -> Work {
        state.withLockedValue { state in
            var work = Work(stopping: state.stopping)
            while work.listen.count + work.unlisten.count < Self.maxChannelCommands,
                let channel = state.dirty.popFirst()
            {
                let wanted = state.wanted[channel] != nil
                if wanted && !listening.contains(channel) {
                    work.listen.append(channel)
                } else if !wanted && listening.contains(channel) {
                    work.unlisten.append(channel)
                } else {
                    work.settled = true
                }
            }
            if work.listen.isEmpty && work.unlisten.isEmpty && state.isUp && !state.queries.isEmpty {
                work.query = state.queries.removeFirst()
            }
            return work
        }
    }

    /// A new connection LISTENs on nothing yet: every channel in use needs a LISTEN.
    func connectionOpened() {
        state.withLockedValue { $0.dirty = Set($0.wanted.keys) }
    }

    var isStopping: Bool { state.withLockedValue { $0.stopping } }

    /// Records what PostgreSQL acknowledged; when the connection is in sync with the
    /// acquired channels, the database counts as up.
    func confirm(listening: Set<ChannelKey>) {
        var upWaiters: [CheckedContinuation<Void, Never>] = []
        let (ready, observers, cameUp) = state.withLockedValue {
            state -> ([Waiter], [@Sendable (Bool) -> Void], Bool) in
            state.confirmed = listening
            let inSync = state.dirty.isEmpty
            var cameUp = false
            if inSync && !state.isUp {
                state.isUp = true
                cameUp = true
                upWaiters = state.upWaiters
                state.upWaiters = []
            }
            guard state.isUp else { return ([], [], false) }
            var ready: [Waiter] = []
            state.waiters.removeAll { waiter in
                guard waiter.channels.allSatisfy({ listening.contains($0) }) else { return false }
                ready.append(waiter)
                return true
            }
            return (ready, cameUp ? state.statusObservers : [], cameUp)
        }
        ready.forEach { $0.ready() }
        if cameUp { observers.forEach { $0(true) } }
        upWaiters.forEach { $0.resume() }
    }

    /// Forgets the lost connection's LISTENs and releases every waiting socket.
    func connectionLost() {
        let (ready, queries, observers) = state.withLockedValue {
            state -> ([Waiter], [Query], [@Sendable (Bool) -> Void]) in
            let wasUp = state.isUp
            state.isUp = false
            state.confirmed = []
            let ready = state.waiters
            state.waiters = []
            let queries = state.queries
            state.queries = []
            return (ready, queries, wasUp ? state.statusObservers : [])
        }
        ready.forEach { $0.ready() }
        queries.forEach { $0.completion(.failure(.connection("database connection lost"))) }
        observers.forEach { $0(false) }
    }

    func failPendingQueries() {
        let queries = state.withLockedValue { state -> [Query] in
            defer { state.queries = [] }
            return state.queries
        }
        queries.forEach { $0.completion(.failure(.connection("listener stopped"))) }
    }

    var wakeSignal: WakeSignal { wake }
    var connectionInfo: String { conninfo }
    var log: Logger { logger }
    func deliver(_ batch: [Notification]) { onNotifications(batch) }
    var deliveryIsBackedUp: Bool { isBackedUp() }
}
