import CLibPQ
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// The listener thread: its connection, the command on the wire, and the outage it is in.
struct ListenerLoop<Sink: NotificationSink> {
    private enum OnTheWire {
        case sync
        /// An empty query on an idle connection: any answer proves the path to PostgreSQL.
        case probe
        case query(ListenRegistry.Query, rows: [String?])
    }

    let listener: Listener<Sink>
    private let probeAfterIdle: Double
    private var answerDeadline: AnswerDeadline
    private var connection: PGConnection? = nil
    private var onTheWire: OnTheWire? = nil
    private var sentAt = 0.0
    private var lastInput = 0.0
    private var backoff = Backoff()
    private var outageStart: Double? = nil
    private var hasConnected = false
    private var failedAttempts = 0
    /// Set when the start-up attempts (`retries`) ran out: why the listener gave up.
    private(set) var gaveUp: String? = nil
    private var logger: Logger { listener.logger }
    private var registry: ListenRegistry { listener.registry }

    init(listener: Listener<Sink>) {
        self.listener = listener
        probeAfterIdle = listener.settings.probeAfterIdle.seconds
        answerDeadline = AnswerDeadline(floor: listener.settings.probeTimeout.seconds)
    }

    mutating func run() {
        while !registry.isStopping, gaveUp == nil {
            if connection == nil {
                connect()
            } else {
                step()
            }
        }
        connection = nil
        registry.failPendingQueries()
        logger.debug("listener stopped")
    }

    private mutating func connect() {
        switch PGConnection.connect(listener.conninfo, applicationName: "postgres-websockets listener") {
        case .success(let conn):
            guard conn.setNonBlocking() else {
                fail("cannot set the connection non-blocking: \(conn.errorMessage)")
                return
            }
            connection = conn
            onTheWire = nil
            registry.connectionOpened()
            lastInput = monotonicSeconds()
            backoff.reset()
            hasConnected = true
            if let start = outageStart {
                logger.log(
                    .notice, "database connection restored",
                    [.database: "restored", .outageSeconds: "\(formatSeconds(monotonicSeconds() - start))"])
            } else {
                logger.log(.info, "listener connected", [.database: "connected", .backendPID: "\(conn.backendPID)"])
            }
            outageStart = nil
        case .failure(let error):
            fail(error.message)
        }
    }

    /// Logs the first failure of an outage; the retries that follow only at debug level.
    private mutating func fail(_ message: String) {
        failedAttempts += 1
        if !hasConnected, let limit = listener.settings.startupAttempts, failedAttempts >= limit {
            gaveUp =
                "cannot connect to PostgreSQL after \(failedAttempts) attempt\(failedAttempts == 1 ? "" : "s") (retries): \(message)"
            return
        }
        if outageStart == nil {
            outageStart = monotonicSeconds()
            logger.log(
                .warning, "database unavailable, retrying with backoff",
                [.database: "unavailable", .error: "\(message)"])
        } else {
            logger.log(.debug, "database still unavailable", [.error: "\(message)"])
        }
        _ = registry.wake.wait(timeout: backoff.nextDelay())
    }

    private mutating func lose(_ reason: String) {
        connection = nil
        onTheWire = nil
        outageStart = monotonicSeconds()
        logger.log(.warning, "database connection lost", [.database: "lost", .error: "\(reason)"])
        registry.connectionLost()
    }

    private mutating func step() {
        guard let conn = connection else { return }
        guard listener.hasDemand else {
            // Leave the socket unread until the event loops catch up; PostgreSQL queues the
            // notifications meanwhile. The connection is busy, not idle: no probe is due.
            _ = registry.wake.wait(timeout: 1)
            lastInput = monotonicSeconds()
            return
        }
        if onTheWire == nil {
            startNextCommand(conn)
            guard connection != nil else { return }
        }
        var timeout = probeAfterIdle
        if onTheWire != nil {
            let waited = monotonicSeconds() - max(sentAt, lastInput)
            let limit = answerDeadline.timeout
            if waited >= limit {
                lose("no answer from PostgreSQL for \(formatSeconds(waited)) s")
                return
            }
            timeout = limit - waited
        }
        let flushPending = conn.flush() == 1
        let readiness = registry.wake.wait(socket: conn.socket, forWriting: flushPending, timeout: timeout)
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
        if onTheWire == nil, !readiness.woken, monotonicSeconds() - lastInput >= probeAfterIdle {
            send(conn, "", as: .probe)
        }
    }

    private mutating func startNextCommand(_ conn: PGConnection) {
        switch registry.nextCommand() {
        case .sync(let sync)?:
            var sql = ""
            for (verb, channels) in [("LISTEN", sync.listen), ("UNLISTEN", sync.unlisten)] {
                for channel in channels {
                    guard let quoted = conn.quoteIdentifier(channel.name) else {
                        lose("cannot quote a channel name: \(conn.errorMessage)")
                        return
                    }
                    sql += "\(verb) \(quoted);"
                }
            }
            send(conn, sql, as: .sync)
            logger.log(
                .debug, "LISTEN set update sent",
                [.listen: "\(sync.listen.count)", .unlisten: "\(sync.unlisten.count)"])
        case .query(let query)?:
            send(conn, query.sql, as: .query(query, rows: []))
        case nil:
            break
        }
    }

    private mutating func send(_ conn: PGConnection, _ sql: String, as command: OnTheWire) {
        guard conn.sendQuery(sql) else {
            if case .query(let query, _) = command {
                query.completion(.failure(DatabaseError(kind: .content, message: conn.errorMessage, sqlState: nil)))
            }
            lose(conn.errorMessage)
            return
        }
        onTheWire = command
        sentAt = monotonicSeconds()
    }

    private mutating func collectResults(_ conn: PGConnection) {
        while let command = onTheWire, !conn.isBusy {
            guard let result = conn.nextResult() else {
                onTheWire = nil
                finish(command)
                continue
            }
            if result.isSuccess {
                if case .query(let query, var rows) = command, result.status == PGRES_TUPLES_OK {
                    for row in 0..<result.rowCount { rows.append(result.value(row: row, column: 0)) }
                    onTheWire = .query(query, rows: rows)
                }
                continue
            }
            let error = DatabaseError(kind: .content, message: result.errorMessage, sqlState: result.sqlState)
            switch command {
            case .query(let query, _):
                // A failed introspection query is the caller's problem, not the connection's.
                onTheWire = .query(ListenRegistry.Query(sql: query.sql, completion: { _ in }), rows: [])
                query.completion(.failure(error))
            case .sync, .probe:
                // LISTEN of a validated name only fails when the session is in trouble.
                while !conn.isBusy, conn.nextResult() != nil {}
                lose("LISTEN failed: \(error)")
                return
            }
        }
    }

    private mutating func finish(_ command: OnTheWire) {
        answerDeadline.answered(after: monotonicSeconds() - sentAt)
        switch command {
        case .sync:
            registry.syncSucceeded(received: listener.sink.received)
        case .probe:
            break
        case .query(let query, let rows):
            query.completion(.success(rows))
        }
    }

    private mutating func dispatchNotifications(_ conn: PGConnection) {
        var batch = listener.sink.makeBatch()
        conn.drainNotifications { channel, payload in
            batch.append(
                channel: UnsafeRawBufferPointer(start: channel, count: strlen(channel)),
                payload: UnsafeRawBufferPointer(start: payload, count: strlen(payload)))
            if batch.count == Listener<Sink>.maxDispatchBatch {
                listener.deliver(batch)
                batch = listener.sink.makeBatch()
            }
        }
        if batch.count > 0 { listener.deliver(batch) }
    }
}
