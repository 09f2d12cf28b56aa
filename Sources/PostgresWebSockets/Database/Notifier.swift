import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import Synchronization

/// Sends client messages to PostgreSQL as NOTIFYs, over `pool-size` connections, as a `Service`.
///
/// Each connection has its own lane (queue + thread); a socket's messages always use the
/// same lane, so they reach PostgreSQL in the order they were sent. A lane sends everything
/// queued so far as one batch, one round trip and one commit. While the database is down
/// messages wait in the lanes, up to `max-pending-messages` client messages in all; they are
/// sent in order once the listener reports the database up again (after it re-LISTENed, so
/// that readers on this server get them too).
///
/// While the database is up but slower than the writers, flow control keeps the queue from
/// filling: past half of `max-pending-messages` a submit answers `.congested` and the socket
/// stops reading; once the queue is below a quarter, `PausedWriters` are resumed.
///
/// On graceful shutdown it sends what is queued, for up to `drainTimeout`, then stops.
final class Notifier: Service, DatabaseStatusObserver, Sendable {
    static let maxBatchNotifications = 4096
    static let maxBatchBytes = 4 << 20
    /// A batch that gets no answer for this long (or cannot even be sent: the connection is
    /// non-blocking) counts as lost with its connection, which is then reset.
    static let resultTimeout = 15.0
    static let drainTimeout = Duration.seconds(5)

    private final class Lane: Sendable {
        let index: Int
        let queue = NIOLockedValueBox(LaneQueue())
        let wake = WakeSignal()
        init(index: Int) { self.index = index }
    }

    private enum Phase: UInt8, AtomicRepresentable {
        case running
        /// Graceful shutdown: lanes send what they hold, then stop.
        case draining
        /// The drain time is over, or the task was cancelled: lanes stop now.
        case abandoning
    }

    private let lanes: [Lane]
    private let maxPending: Int
    /// Client messages queued and not yet committed (meta events are not counted).
    private let pending: WatermarkedLevel
    /// Everything queued and not yet committed, meta events included.
    private let queued = Atomic<Int>(0)
    private let phase = Atomic<Phase>(.running)
    /// Client messages taken, and committed by PostgreSQL (for `/metrics`).
    private let taken = Atomic<Int>(0)
    private let committed = Atomic<Int>(0)
    /// Batches committed, and their sizes in client messages and events.
    private let batchSizes = NIOLockedValueBox(BucketCounts(bounds: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 4096]))
    private let conninfo: String
    /// Client messages go through `pgws.send`, which stores those of durable channels.
    private let durable: Bool
    let status: DatabaseStatus
    private let pausedWriters: any PausedWriters
    private let logger: Logger

    init(
        conninfo: String, settings: NotifierSettings, durable: Bool = false, status: DatabaseStatus,
        pausedWriters: any PausedWriters, logger: Logger
    ) {
        self.conninfo = conninfo
        self.durable = durable
        self.maxPending = settings.maxPendingMessages
        self.pending = WatermarkedLevel(
            Watermark(low: settings.maxPendingMessages / 4, high: max(1, settings.maxPendingMessages / 2 + 1)))
        self.status = status
        self.pausedWriters = pausedWriters
        self.logger = logger
        self.lanes = (0..<max(1, settings.poolSize)).map(Lane.init)
        status.subscribe(self)
    }

    func run() async {
        await withTaskGroup(of: Bool.self) { group in
            for lane in lanes {
                group.addTask {
                    await runOnBackgroundThread(name: "pgws-notify-\(lane.index)") { self.drive(lane) }
                    return true
                }
            }
            group.addTask {
                if (try? await gracefulShutdown()) != nil {
                    self.setPhase(.draining)
                    // Cut short when every lane finished first.
                    try? await Task.sleep(for: Self.drainTimeout)
                }
                self.setPhase(.abandoning)
                return false
            }
            var lanesRunning = lanes.count
            while let laneFinished = await group.next() {
                guard laneFinished else { continue }
                lanesRunning -= 1
                if lanesRunning == 0 { group.cancelAll() }
            }
        }
        if queuedCount > 0 {
            logger.log(.error, "shutting down with messages not sent to PostgreSQL", [.messages: "\(queuedCount)"])
        }
    }

    private func setPhase(_ new: Phase) {
        phase.store(new, ordering: .sequentiallyConsistent)
        lanes.forEach { $0.wake.signal() }
    }

    // MARK: - DatabaseStatusObserver

    func databaseStatusChanged(isUp: Bool) {
        if isUp {
            lanes.forEach { $0.wake.signal() }
        } else {
            // Paused writers wait for a queue that will not drain now: they are told instead.
            pausedWriters.resumePausedWriters()
        }
    }

    // MARK: - Submitting (event loops)

    /// Queues a client message on `lane`, unless `max-pending-messages` are already waiting.
    func submit(_ message: OutgoingMessage, lane: Int) -> SubmitResult {
        guard let congested = pending.add(1, limit: maxPending) else { return .full }
        taken.add(1, ordering: .relaxed)
        enqueue(message, lane: lane, counted: true)
        return congested && status.isUp ? .congested : .accepted
    }

    /// Queues a server event (meta channel). Not counted against `max-pending-messages`:
    /// there are at most two per connection, so `max-connections` bounds them.
    func submitEvent(_ message: OutgoingMessage, lane: Int) {
        enqueue(message, lane: lane, counted: false)
    }

    /// Messages (and events) not yet committed by PostgreSQL.
    var queuedCount: Int { queued.load(ordering: .relaxed) }

    /// Client messages taken since start, and committed since start.
    var messageCounts: (taken: Int, committed: Int) {
        (taken.load(ordering: .relaxed), committed.load(ordering: .relaxed))
    }

    /// The sizes of the batches committed since start.
    var committedBatchSizes: BucketCounts { batchSizes.withLockedValue { $0 } }

    private func enqueue(_ message: OutgoingMessage, lane index: Int, counted: Bool) {
        let lane = lanes[abs(index % lanes.count)]
        queued.add(1, ordering: .relaxed)
        // The lane thread looks at its queue again after every batch: only an idle lane
        // needs waking (an eventfd keeps the signal until the thread waits).
        if lane.queue.withLockedValue({ $0.append(LaneQueue.Entry(message: message, counted: counted)) }) {
            lane.wake.signal()
        }
    }

    // MARK: - Lane threads

    private func drive(_ lane: Lane) {
        var connection: PGConnection? = nil
        var backoff = Backoff()
        while true {
            let phase = self.phase.load(ordering: .sequentiallyConsistent)
            let isEmpty = lane.queue.withLockedValue { $0.isEmpty }
            let databaseUp = status.isUp
            if phase == .abandoning || (phase == .draining && (isEmpty || !databaseUp)) { return }
            guard !isEmpty, databaseUp else {
                _ = lane.wake.wait(timeout: 1)
                continue
            }
            if connection == nil {
                switch PGConnection.connect(conninfo, applicationName: "postgres-websockets notifier") {
                case .success(let conn) where !conn.setNonBlocking():
                    // Blocking, a send larger than a dead path holds would wait for TCP to give up.
                    logger.log(
                        .debug, "notifier cannot connect", [.lane: "\(lane.index)", .error: "\(conn.errorMessage)"])
                    _ = lane.wake.wait(timeout: backoff.nextDelay())
                    continue
                case .success(let conn):
                    connection = conn
                    backoff.reset()
                case .failure(let error):
                    logger.log(.debug, "notifier cannot connect", [.lane: "\(lane.index)", .error: "\(error.message)"])
                    _ = lane.wake.wait(timeout: backoff.nextDelay())
                    continue
                }
            }
            // No local reference to the connection: it must close the moment it is dropped.
            guard connection != nil else { continue }
            let batch = lane.queue.withLockedValue {
                $0.nextBatch(maxNotifications: Self.maxBatchNotifications, maxBytes: Self.maxBatchBytes)
            }
            let result = send(batch, on: connection!)
            let outcome: LaneQueue.Outcome
            var offsets: [String?] = []
            if case .success(let rows) = result { offsets = rows }
            switch result {
            case .success: outcome = .committed
            case .failure(let error) where error.kind == .connection: outcome = .connectionFailed
            case .failure(let error): outcome = .refused(error)
            }
            switch lane.queue.withLockedValue({ $0.finish(outcome) }) {
            case .completed(let count, let counted):
                completed(count: count, counted: counted)
                committed.add(counted, ordering: .relaxed)
                batchSizes.withLockedValue { $0.record(Double(count)) }
                // A message's offset is that of its first notification (its channel's; the rest
                // are audit copies).
                var row = 0
                for entry in batch {
                    if entry.message.confirms {
                        let offset = row < offsets.count ? offsets[row].flatMap { UInt64($0) } : nil
                        entry.message.sender?.messageCommitted(offset: offset)
                    }
                    row += entry.message.notifications.count
                }
            case .rejected(let counted):
                if case .refused(let error) = outcome {
                    logger.log(.info, "PostgreSQL rejected a client message", [.error: "\(error)"])
                    batch[0].message.sender?.messageRejected(reason: error.message)
                }
                completed(count: 1, counted: counted)
            case .retry:
                if case .connectionFailed = outcome, case .failure(let error) = result {
                    // Reset at once: the sooner what is still in flight is dropped, the smaller
                    // the chance that a healing path delivers it after all.
                    connection?.resetOnClose()
                    connection = nil
                    logger.log(
                        .warning, "NOTIFY batch failed, will retry",
                        [.lane: "\(lane.index)", .messages: "\(batch.count)", .error: "\(error)"])
                    _ = lane.wake.wait(timeout: backoff.nextDelay())
                }
            }
        }
    }

    private func completed(count: Int, counted: Int) {
        queued.subtract(count, ordering: .relaxed)
        if counted > 0, pending.take(counted) {
            pausedWriters.resumePausedWriters()
        }
    }

    /// Sends one batch in one statement and waits for PostgreSQL's answer: with durable
    /// channels, one row per notification (its offset, or NULL).
    private func send(_ entries: [LaneQueue.Entry], on conn: PGConnection) -> Result<[String?], DatabaseError> {
        var batch = NotifyBatch()
        for entry in entries {
            for notification in entry.message.notifications {
                batch.append(channel: notification.channel, payload: notification.payload)
            }
        }
        guard batch.count > 0 else { return .success([]) }
        guard
            conn.sendQuery(
                durable ? NotifyBatch.durableSQL : NotifyBatch.sql, binaryParameters: batch.parameters,
                types: [NotifyBatch.textArrayOID, NotifyBatch.textArrayOID])
        else { return .failure(.connection(conn.errorMessage)) }
        return awaitResult(conn)
    }

    private func awaitResult(_ conn: PGConnection) -> Result<[String?], DatabaseError> {
        let deadline = monotonicSeconds() + Self.resultTimeout
        var outcome: Result<[String?], DatabaseError>? = nil
        while true {
            while !conn.isBusy {
                guard let result = conn.nextResult() else {
                    return outcome ?? .failure(.connection("no result from PostgreSQL"))
                }
                if result.isSuccess {
                    if outcome == nil {
                        outcome = .success(
                            durable ? (0..<result.rowCount).map { result.value(row: $0, column: 0) } : [])
                    }
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
