import CLibPQ
import Logging
import NIOCore
import NIOWebSocket

#if canImport(Glibc)
    import Glibc
#endif

/// The listener thread's state: the connection, what it LISTENs on, the command in flight.
struct ListenerLoop {
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
            listener.connectionOpened()
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
        if listener.deliveryIsBackedUp {
            // Leave the socket unread until the event loops catch up; PostgreSQL queues the
            // notifications meanwhile. The connection is busy, not idle: no probe is due.
            _ = listener.wakeSignal.wait(timeout: 0.05)
            lastInput = monotonicSeconds()
            return
        }
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
        } else if needsConfirm || work.settled {
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
            // Sockets waiting for these channels may open now, before any further round trip.
            listener.confirm(listening: listening)
            needsConfirm = true
            listener.log.debug(
                "LISTEN set updated", metadata: ["listen": "\(listen.count)", "unlisten": "\(unlisten.count)"])
        case .probe:
            break
        case .query(let query, let rows):
            query.completion(.success(rows))
        }
    }

    private mutating func dispatchNotifications(_ conn: PGConnection) {
        var frames = FrameArena()
        conn.drainNotifications { channel, payload in
            frames.append(
                channel: String(cString: channel),
                payload: UnsafeRawBufferPointer(start: payload, count: strlen(payload)))
            if frames.count == Listener.maxDispatchBatch {
                listener.deliver(frames.take())
            }
        }
        if frames.count > 0 { listener.deliver(frames.take()) }
    }
}

func format2(_ value: Double) -> String {
    let hundredths = Int((value * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
}
