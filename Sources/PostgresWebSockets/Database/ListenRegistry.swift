import NIOConcurrencyHelpers

/// What the listener's connection must do, shared between the event loops that ask and the
/// listener thread that does it: the channels to LISTEN on (`ListenStateMachine`), the
/// sockets waiting for their LISTEN, and introspection queries for the listener's session.
///
/// Created before the listener and the hub, so that the hub can hold channels and the
/// listener can serve them without either knowing the other.
final class ListenRegistry: Sendable {
    typealias Ready = @Sendable () -> Void

    /// Statements per LISTEN/UNLISTEN round trip.
    static let maxChannelCommands = 1000

    struct Query: Sendable {
        let sql: String
        let completion: @Sendable (Result<[String?], DatabaseError>) -> Void
    }

    enum Command {
        case sync(ListenStateMachine<Ready>.Sync)
        case query(Query)
    }

    private struct Shared: Sendable {
        var machine = ListenStateMachine<Ready>()
        var queries: [Query] = []
        var stopping = false
    }

    /// The listener's only writer of the database status.
    let status: DatabaseStatus
    /// Wakes the listener thread when there is something to do.
    let wake = WakeSignal()
    private let shared = NIOLockedValueBox(Shared())

    init(status: DatabaseStatus) {
        self.status = status
    }

    // MARK: - Holders (the hub's event loops)

    /// Adds a holder to each of `acquire` and calls `ready` once PostgreSQL LISTENs on every
    /// one of `awaiting`, or at once while the database is down (they are LISTENed on reconnect).
    func acquire(_ acquire: [ChannelKey], awaiting: [ChannelKey], ready: @escaping Ready) {
        let (needsLook, action) = shared.withLockedValue { shared in
            (shared.machine.acquire(acquire), shared.machine.whenListening(awaiting, ready))
        }
        if needsLook { wake.signal() }
        if case .ready = action { ready() }
    }

    func release(_ channels: [ChannelKey]) {
        if shared.withLockedValue({ $0.machine.release(channels) }) { wake.signal() }
    }

    /// Channels PostgreSQL acknowledged LISTENing on.
    var listeningCount: Int { shared.withLockedValue { $0.machine.listeningCount } }

    /// Queues a one-column query for the listener's own session, e.g.
    /// `SELECT pg_listening_channels()`, which only that session can answer.
    func query(_ sql: String) async throws -> [String?] {
        try await withCheckedThrowingContinuation { continuation in
            let query = Query(sql: sql) { continuation.resume(with: $0.mapError { $0 as any Error }) }
            let accepted = shared.withLockedValue { shared -> Bool in
                guard !shared.stopping else { return false }
                shared.queries.append(query)
                return true
            }
            if accepted {
                wake.signal()
            } else {
                continuation.resume(throwing: DatabaseError.connection("listener stopped"))
            }
        }
    }

    // MARK: - The listener thread

    var isStopping: Bool { shared.withLockedValue { $0.stopping } }

    func stop() {
        shared.withLockedValue { $0.stopping = true }
        wake.signal()
    }

    func connectionOpened() {
        shared.withLockedValue { $0.machine.connected() }
    }

    /// The next command for an idle connection, if any; lets waiters through and reports
    /// the database up when an idle connection LISTENs on everything held.
    func nextCommand() -> Command? {
        let (next, query) = shared.withLockedValue { shared -> (ListenStateMachine<Ready>.NextAction?, Query?) in
            let next = shared.machine.nextCommand(maxStatements: Self.maxChannelCommands)
            if case .idle = next, shared.machine.isUp, !shared.queries.isEmpty {
                return (next, shared.queries.removeFirst())
            }
            return (next, nil)
        }
        switch next {
        case .sync(let sync)?:
            return .sync(sync)
        case .idle(let cameUp, let ready)?:
            ready.forEach { $0() }
            if cameUp { status.set(isUp: true) }
            return query.map(Command.query)
        case nil:
            return nil
        }
    }

    /// PostgreSQL acknowledged the round trip; the listener had received `received`
    /// notifications by then.
    func syncSucceeded(received: UInt64) {
        shared.withLockedValue { $0.machine.syncSucceeded(received: received) }.forEach { $0() }
    }

    /// Those of `channels` that some socket still holds.
    func held(among channels: [ChannelKey]) -> Set<ChannelKey> {
        shared.withLockedValue { shared in Set(channels.filter { shared.machine.isHeld($0) }) }
    }

    /// See `ListenStateMachine.listenedSince`.
    func listenedSince(_ channel: ChannelKey) -> UInt64? {
        shared.withLockedValue { $0.machine.listenedSince(channel) }
    }

    /// Forgets the lost connection's LISTENs and lets every waiting socket through.
    func connectionLost() {
        let (wasUp, ready, queries) = shared.withLockedValue { shared in
            let (wasUp, ready) = shared.machine.connectionLost()
            defer { shared.queries = [] }
            return (wasUp, ready, shared.queries)
        }
        ready.forEach { $0() }
        queries.forEach { $0.completion(.failure(.connection("database connection lost"))) }
        if wasUp { status.set(isUp: false) }
    }

    func failPendingQueries() {
        let queries = shared.withLockedValue { shared in
            defer { shared.queries = [] }
            return shared.queries
        }
        queries.forEach { $0.completion(.failure(.connection("listener stopped"))) }
    }
}
