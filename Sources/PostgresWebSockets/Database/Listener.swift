import CLibPQ
import Logging
import NIOCore
import NIOWebSocket
import Synchronization

#if canImport(Glibc)
import Glibc
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

    fileprivate struct Query {
        let sql: String
        let completion: @Sendable (Result<[String?], DatabaseError>) -> Void
    }

    private struct State {
        var wanted: [ChannelKey: Int] = [:]
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
    private let state = Mutex(State())
    private let wake = WakeSignal()

    public init(conninfo: String, logger: Logger, onNotifications: @escaping @Sendable ([Notification]) -> Void) {
        self.conninfo = conninfo
        self.logger = logger
        self.onNotifications = onNotifications
    }

    public func start() {
        startBackgroundThread(name: "pgws-listener") { [self] in
            var loop = ListenerLoop(listener: self)
            loop.run()
        }
    }

    public func stop() {
        state.withLock { $0.stopping = true }
        wake.signal()
    }

    /// Whether the listener is connected and LISTENs every acquired channel.
    public var isUp: Bool { state.withLock { $0.isUp } }

    /// Number of channels PostgreSQL has acknowledged LISTENing on.
    public var listeningCount: Int { state.withLock { $0.confirmed.count } }

    /// Calls `observer` (on the listener thread) whenever the database goes up or down.
    public func observeStatus(_ observer: @escaping @Sendable (Bool) -> Void) {
        state.withLock { $0.statusObservers.append(observer) }
    }

    /// Returns once the listener is connected and LISTENs every acquired channel.
    public func waitUntilUp() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let isUp = state.withLock { state -> Bool in
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
        let (isReady, needsSync) = state.withLock { state -> (Bool, Bool) in
            var needsSync = false
            for channel in channels {
                let count = state.wanted[channel, default: 0]
                state.wanted[channel] = count + 1
                if count == 0 && !state.confirmed.contains(channel) { needsSync = true }
            }
            let isReady = !state.isUp || channels.allSatisfy { state.confirmed.contains($0) }
            if !isReady { state.waiters.append(Waiter(channels: channels, ready: ready)) }
            return (isReady, needsSync)
        }
        if needsSync { wake.signal() }
        if isReady { ready() }
    }

    public func release(_ names: [String]) {
        let channels = names.map(ChannelKey.init)
        let needsSync = state.withLock { state -> Bool in
            var needsSync = false
            for channel in channels {
                guard let count = state.wanted[channel] else { continue }
                if count <= 1 {
                    state.wanted[channel] = nil
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
            let accepted = state.withLock { state -> Bool in
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

    fileprivate struct Work {
        var listen: [ChannelKey] = []
        var unlisten: [ChannelKey] = []
        var query: Query? = nil
        var stopping = false
    }

    /// What the connection must do next, given the channels it LISTENs on now.
    fileprivate func nextWork(listening: Set<ChannelKey>) -> Work {
        state.withLock { state in
            var work = Work(stopping: state.stopping)
            for channel in state.wanted.keys where !listening.contains(channel) {
                work.listen.append(channel)
                if work.listen.count == Self.maxChannelCommands { break }
            }
            for channel in listening where state.wanted[channel] == nil {
                if work.listen.count + work.unlisten.count == Self.maxChannelCommands { break }
                work.unlisten.append(channel)
            }
            if work.listen.isEmpty && work.unlisten.isEmpty && state.isUp && !state.queries.isEmpty {
                work.query = state.queries.removeFirst()
            }
            return work
        }
    }

    fileprivate var isStopping: Bool { state.withLock { $0.stopping } }

    /// Records what PostgreSQL acknowledged; when the connection is in sync with the
    /// acquired channels, the database counts as up.
    fileprivate func confirm(listening: Set<ChannelKey>) {
        var upWaiters: [CheckedContinuation<Void, Never>] = []
        let (ready, observers, cameUp) = state.withLock { state -> ([Waiter], [@Sendable (Bool) -> Void], Bool) in
            state.confirmed = listening
            let inSync = state.wanted.keys.allSatisfy { listening.contains($0) }
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
    fileprivate func connectionLost() {
        let (ready, queries, observers) = state.withLock { state -> ([Waiter], [Query], [@Sendable (Bool) -> Void]) in
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

    fileprivate func failPendingQueries() {
        let queries = state.withLock { state -> [Query] in
            defer { state.queries = [] }
            return state.queries
        }
        queries.forEach { $0.completion(.failure(.connection("listener stopped"))) }
    }

    fileprivate var wakeSignal: WakeSignal { wake }
    fileprivate var connectionInfo: String { conninfo }
    fileprivate var log: Logger { logger }
    fileprivate func deliver(_ batch: [Notification]) { onNotifications(batch) }
}

/// The listener thread's state: the connection, what it LISTENs on, the command in flight.
private struct ListenerLoop {
    private enum InFlight {
        case sync(listen: [ChannelKey], unlisten: [ChannelKey])
        case probe
        case query(Listener.Query, rows: [String?])
    }

    let listener: Listener
    private var connection: PGConnection? = nil
    private var listening: Set<ChannelKey> = []
    private var inFlight: InFlight? = nil
    private var inFlightSince = 0.0
    private var lastInput = 0.0
    private var backoff = Backoff()
    /// Set when `listening` changed and the shared state has not been told yet.
    private var needsConfirm = false
    private var outageStart: Double? = nil
    private let allocator = ByteBufferAllocator()

    init(listener: Listener) {
        self.listener = listener
    }

    mutating func run() {
        while !listener.isStopping {
            if connection == nil {
                connect()
                continue
            }
            step()
        }
        connection = nil
        listener.failPendingQueries()
        listener.log.debug("listener stopped")
    }

    private mutating func connect() {
        switch PGConnection.connect(listener.connectionInfo, applicationName: "postgres-websockets listener") {
        case .success(let conn):
            guard conn.setNonBlocking() else {
                fail("cannot set the connection non-blocking: \(conn.errorMessage)")
                return
            }
            connection = conn
            listening = []
            inFlight = nil
            needsConfirm = true
            lastInput = monotonicSeconds()
            backoff.reset()
            if let start = outageStart {
                let seconds = monotonicSeconds() - start
                listener.log.notice(
                    "database connection restored",
                    metadata: ["outage_seconds": "\(String(format2(seconds)))"])
            } else {
                listener.log.info("listener connected", metadata: ["backend_pid": "\(conn.backendPID)"])
            }
            outageStart = nil
        case .failure(let error):
            fail(error.message)
        }
    }

    /// Logs the first failure of an outage; the retries that follow only at debug level.
    private mutating func fail(_ message: String) {
        if outageStart == nil {
            outageStart = monotonicSeconds()
            listener.log.warning("database unavailable, retrying with backoff", metadata: ["error": "\(message)"])
        } else {
            listener.log.debug("database still unavailable", metadata: ["error": "\(message)"])
        }
        _ = listener.wakeSignal.wait(timeout: backoff.nextDelay())
    }

    private mutating func lose(_ reason: String) {
        connection = nil
        listening = []
        inFlight = nil
        outageStart = monotonicSeconds()
        listener.log.warning("database connection lost", metadata: ["error": "\(reason)"])
        listener.connectionLost()
    }

    private mutating func step() {
        guard let conn = connection else { return }
        if inFlight == nil {
            startNextCommand(conn)
            guard connection != nil else { return }
        }
        let now = monotonicSeconds()
        var timeout = Listener.probeAfterIdle
        if inFlight != nil {
            let waited = now - max(inFlightSince, lastInput)
            if waited >= Listener.probeTimeout {
                lose("no answer from PostgreSQL for \(format2(waited)) s")
                return
            }
            timeout = Listener.probeTimeout - waited
        }
        let flushPending = conn.flush() == 1
        let readiness = listener.wakeSignal.wait(socket: conn.socket, forWriting: flushPending, timeout: timeout)
        if readiness.socketReadable || readiness.socketError {
            lastInput = monotonicSeconds()
            guard conn.consumeInput() else {
                lose(conn.errorMessage)
                return
            }
            collectResults(conn)
            guard connection != nil else { return }
            dispatchNotifications(conn)
            if conn.isBad {
                lose(conn.errorMessage)
                return
            }
        }
        if inFlight == nil, !readiness.woken, monotonicSeconds() - lastInput >= Listener.probeAfterIdle {
            send(conn, "", as: .probe)
        }
    }

    private mutating func startNextCommand(_ conn: PGConnection) {
        let work = listener.nextWork(listening: listening)
        if work.stopping { return }
        if !work.listen.isEmpty || !work.unlisten.isEmpty {
            var sql = ""
            for channel in work.listen {
                guard let quoted = conn.quoteIdentifier(channel.name) else {
                    lose("cannot quote a channel name: \(conn.errorMessage)")
                    return
                }
                sql += "LISTEN \(quoted);"
            }
            for channel in work.unlisten {
                guard let quoted = conn.quoteIdentifier(channel.name) else {
                    lose("cannot quote a channel name: \(conn.errorMessage)")
                    return
                }
                sql += "UNLISTEN \(quoted);"
            }
            send(conn, sql, as: .sync(listen: work.listen, unlisten: work.unlisten))
        } else if let query = work.query {
            send(conn, query.sql, as: .query(query, rows: []))
        } else if needsConfirm {
            needsConfirm = false
            listener.confirm(listening: listening)
        }
    }

    private mutating func send(_ conn: PGConnection, _ sql: String, as command: InFlight) {
        guard conn.sendQuery(sql) else {
            if case .query(let query, _) = command {
                query.completion(.failure(DatabaseError(kind: .content, message: conn.errorMessage, sqlState: nil)))
            }
            lose(conn.errorMessage)
            return
        }
        inFlight = command
        inFlightSince = monotonicSeconds()
    }

    private mutating func collectResults(_ conn: PGConnection) {
        while let command = inFlight, !conn.isBusy {
            guard let result = conn.nextResult() else {
                inFlight = nil
                finish(command)
                continue
            }
            if result.isSuccess {
                if case .query(let query, var rows) = command, result.status == PGRES_TUPLES_OK {
                    for row in 0..<result.rowCount { rows.append(result.value(row: row, column: 0)) }
                    inFlight = .query(query, rows: rows)
                }
                continue
            }
            let error = DatabaseError(kind: .content, message: result.errorMessage, sqlState: result.sqlState)
            switch command {
            case .query(let query, _):
                // A failed introspection query is the caller's problem, not the connection's.
                inFlight = .query(Listener.Query(sql: query.sql, completion: { _ in }), rows: [])
                query.completion(.failure(error))
            case .sync, .probe:
                // LISTEN of a validated name only fails when the session is in trouble.
                drainResults(conn)
                lose("LISTEN failed: \(error)")
                return
            }
        }
    }

    private mutating func drainResults(_ conn: PGConnection) {
        while !conn.isBusy, conn.nextResult() != nil {}
    }

    private mutating func finish(_ command: InFlight) {
        switch command {
        case .sync(let listen, let unlisten):
            listening.formUnion(listen)
            listening.subtract(unlisten)
            needsConfirm = true
            listener.log.debug("LISTEN set updated", metadata: ["listen": "\(listen.count)", "unlisten": "\(unlisten.count)"])
        case .probe:
            break
        case .query(let query, let rows):
            query.completion(.success(rows))
        }
    }

    private mutating func dispatchNotifications(_ conn: PGConnection) {
        var batch: [Notification] = []
        conn.drainNotifications { channel, payload in
            let length = strlen(payload)
            var frame = allocator.buffer(capacity: WebSocketFrames.headerLength(payloadLength: length) + length)
            WebSocketFrames.writeHeader(opcode: .text, payloadLength: length, into: &frame)
            frame.writeBytes(UnsafeRawBufferPointer(start: payload, count: length))
            batch.append(Notification(channel: String(cString: channel), frame: frame))
            if batch.count == Listener.maxDispatchBatch {
                listener.deliver(batch)
                batch.removeAll(keepingCapacity: true)
            }
        }
        if !batch.isEmpty { listener.deliver(batch) }
    }
}

func format2(_ value: Double) -> String {
    let hundredths = Int((value * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
}
