import Logging
import Synchronization
import NIOConcurrencyHelpers

/// Sends client messages to PostgreSQL as NOTIFYs, over `pool-size` connections.
///
/// Each connection has its own lane (queue + thread); a socket's messages always use the
/// same lane, so they reach PostgreSQL in the order they were sent. A lane sends everything
/// queued so far as one batch, one round trip and one commit. While the database is down
/// messages wait in the lanes, up to `maxPending` client messages in all; they are sent in
/// order once the listener reports the database up again (after it re-LISTENed, so that
/// readers on this server get them too).
///
/// While the database is up but slower than the writers, the queue is kept from filling by
/// flow control instead: past half of `maxPending` a submit reports `.congested`, the socket
/// stops reading, and every paused socket resumes once the queue is below a quarter.
public final class Notifier: Sendable {
    public enum SubmitResult: Sendable {
        case accepted
        /// Queued, but the queue is over half full: the sender should stop reading.
        case congested
        /// Not queued: `maxPending` messages are waiting.
        case full
    }

    static let maxBatchNotifications = 4096
    static let maxBatchBytes = 4 << 20
    /// A batch that gets no answer for this long counts as lost with its connection.
    static let resultTimeout = 15.0

    private let lanes: [Lane]
    private let maxPending: Int
    private let pending = Atomic<Int>(0)
    private let queued = Atomic<Int>(0)
    private let databaseUp = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    private let congested = Atomic<Bool>(false)
    private let onRelief = NIOLockedValueBox<(@Sendable () -> Void)?>(nil)
    private let conninfo: String
    private let logger: Logger

    public init(conninfo: String, poolSize: Int, maxPending: Int, logger: Logger) {
        self.conninfo = conninfo
        self.maxPending = maxPending
        self.logger = logger
        self.lanes = (0..<max(1, poolSize)).map { _ in Lane() }
    }

    public func start() {
        for (index, lane) in lanes.enumerated() {
            startBackgroundThread(name: "pgws-notify-\(index)") { [self] in
                self.run(lane: lane)
            }
        }
    }

    /// Called by the listener: messages flow only while it is up.
    public func setDatabaseUp(_ up: Bool) {
        databaseUp.store(up, ordering: .sequentiallyConsistent)
        if up { lanes.forEach { $0.wake.signal() } }
    }

    /// Called (on a notifier thread) when a congested queue went below a quarter full.
    public func whenRelieved(_ callback: @escaping @Sendable () -> Void) {
        onRelief.withLockedValue { $0 = callback }
    }

    public var isDatabaseUp: Bool { databaseUp.load(ordering: .relaxed) }

    /// Queues a client message, unless `maxPending` client messages are already waiting.
    public func submit(_ message: OutgoingMessage, lane: Int) -> SubmitResult {
        var current = pending.load(ordering: .relaxed)
        while true {
            guard current < maxPending else {
                congested.store(true, ordering: .relaxed)
                return .full
            }
            let (exchanged, original) = pending.compareExchange(
                expected: current, desired: current + 1, ordering: .relaxed)
            if exchanged { break }
            current = original
        }
        enqueue(message, lane: lane, counted: true)
        if current + 1 > maxPending / 2 {
            congested.store(true, ordering: .relaxed)
            return .congested
        }
        return .accepted
    }

    /// Queues a server event (meta channel). Not counted against `maxPending`: there are at
    /// most two per connection, so `max-connections` bounds them.
    public func submitEvent(_ message: OutgoingMessage, lane: Int) {
        enqueue(message, lane: lane, counted: false)
    }

    /// Messages (and events) not yet committed by PostgreSQL.
    public var queuedCount: Int { queued.load(ordering: .relaxed) }

    /// Waits until every queued message is committed or `timeout` seconds pass.
    /// Returns whether the queue emptied.
    public func drain(timeout: Double) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        while queuedCount > 0 {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    public func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        lanes.forEach { $0.wake.signal() }
    }

    private func enqueue(_ message: OutgoingMessage, lane index: Int, counted: Bool) {
        let lane = lanes[abs(index % lanes.count)]
        queued.add(1, ordering: .relaxed)
        let wasEmpty = lane.state.withLockedValue { state in
            state.messages.append(Lane.Entry(message: message, counted: counted))
            return state.messages.count == 1
        }
        // The lane thread looks at its queue again after every batch: only an idle lane
        // needs waking (an eventfd keeps the signal until the thread waits).
        if wasEmpty { lane.wake.signal() }
    }

    // MARK: - Lane threads

    private final class Lane: Sendable {
        struct Entry: Sendable {
            let message: OutgoingMessage
            let counted: Bool
        }
        struct State {
            var messages: [Entry] = []
            /// After a batch failed for its content, messages are sent one by one until
            /// this many are through, to find the culprit(s) without losing the rest.
            var isolateCount = 0
        }
        let state = NIOLockedValueBox(State())
        let wake = WakeSignal()
    }

    private func run(lane: Lane) {
        var connection: PGConnection? = nil
        var backoff = Backoff()
        while true {
            let isStopping = stopping.load(ordering: .relaxed)
            let isEmpty = lane.state.withLockedValue { $0.messages.isEmpty }
            if isStopping && (isEmpty || !databaseUp.load(ordering: .relaxed)) { break }
            guard !isEmpty, databaseUp.load(ordering: .relaxed) else {
                _ = lane.wake.wait(timeout: 1)
                continue
            }
            if connection == nil {
                switch PGConnection.connect(conninfo, applicationName: "postgres-websockets notifier") {
                case .success(let conn):
                    connection = conn
                    backoff.reset()
                case .failure(let error):
                    logger.debug("notifier cannot connect", metadata: ["error": "\(error.message)"])
                    _ = lane.wake.wait(timeout: backoff.nextDelay())
                    continue
                }
            }
            guard let conn = connection else { continue }
            let (entries, isolating) = takeBatch(lane)
            switch send(entries, on: conn) {
            case .success:
                complete(entries.count, in: lane, isolating: isolating)
            case .failure(let error) where error.kind == .connection:
                logger.warning(
                    "NOTIFY batch failed, will retry", metadata: ["error": "\(error)", "messages": "\(entries.count)"])
                connection = nil
                _ = lane.wake.wait(timeout: backoff.nextDelay())
            case .failure(let error):
                if entries.count == 1 {
                    logger.info("PostgreSQL rejected a client message", metadata: ["error": "\(error)"])
                    entries[0].message.sender?.messageRejected(reason: "rejected by PostgreSQL: \(error.message)")
                    complete(1, in: lane, isolating: isolating)
                } else {
                    lane.state.withLockedValue { $0.isolateCount = max($0.isolateCount, entries.count) }
                }
            }
        }
    }

    private func takeBatch(_ lane: Lane) -> ([Lane.Entry], isolating: Bool) {
        lane.state.withLockedValue { state in
            if state.isolateCount > 0 { return ([state.messages[0]], true) }
            var bytes = 0
            var notifications = 0
            var end = 0
            while end < state.messages.count {
                let message = state.messages[end].message
                let size = message.notifications.reduce(0) { $0 + $1.channel.utf8.count + $1.payload.count }
                if end > 0,
                    notifications + message.notifications.count > Self.maxBatchNotifications
                        || bytes + size > Self.maxBatchBytes
                {
                    break
                }
                bytes += size
                notifications += message.notifications.count
                end += 1
            }
            return (Array(state.messages[0..<end]), false)
        }
    }

    private func complete(_ count: Int, in lane: Lane, isolating: Bool) {
        let counted = lane.state.withLockedValue { state -> Int in
            let done = state.messages[0..<count].filter(\.counted).count
            state.messages.removeFirst(count)
            if isolating { state.isolateCount -= count }
            return done
        }
        let left = pending.subtract(counted, ordering: .relaxed).newValue
        queued.subtract(count, ordering: .relaxed)
        if left <= maxPending / 4, congested.exchange(false, ordering: .relaxed) {
            onRelief.withLockedValue { $0 }?()
        }
    }

    /// Sends one batch in one statement and waits for PostgreSQL's answer.
    private func send(_ entries: [Lane.Entry], on conn: PGConnection) -> Result<Void, DatabaseError> {
        var batch = NotifyBatch()
        for entry in entries {
            for notification in entry.message.notifications {
                batch.append(channel: notification.channel, payload: notification.payload)
            }
        }
        guard batch.count > 0 else { return .success(()) }
        guard
            conn.sendQuery(
                NotifyBatch.sql, binaryParameters: batch.parameters,
                types: [NotifyBatch.textArrayOID, NotifyBatch.textArrayOID])
        else { return .failure(.connection(conn.errorMessage)) }
        return awaitResult(conn)
    }

    private func awaitResult(_ conn: PGConnection) -> Result<Void, DatabaseError> {
        let deadline = monotonicSeconds() + Self.resultTimeout
        var outcome: Result<Void, DatabaseError>? = nil
        while true {
            while !conn.isBusy {
                guard let result = conn.nextResult() else {
                    return outcome ?? .failure(.connection("no result from PostgreSQL"))
                }
                if result.isSuccess {
                    if outcome == nil { outcome = .success(()) }
                } else {
                    let state = result.sqlState
                    let transient = conn.isBad || state.map(DatabaseError.isTransient) ?? true
                    outcome = .failure(
                        DatabaseError(
                            kind: transient ? .connection : .content, message: result.errorMessage, sqlState: state))
                }
            }
            let remaining = deadline - monotonicSeconds()
            guard remaining > 0 else {
                return .failure(.connection("no answer from PostgreSQL within \(Int(Self.resultTimeout)) s"))
            }
            let flushing = conn.flush() == 1
            let readiness = pollReadiness(socket: conn.socket, forWriting: flushing, timeout: remaining)
            if readiness.socketReadable || readiness.socketError {
                guard conn.consumeInput() else { return .failure(.connection(conn.errorMessage)) }
            }
        }
    }
}
