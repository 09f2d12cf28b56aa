import CLibPQ
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// The listener thread: its connection, the command on the wire, and the outage it is in.
struct ListenerLoop<Sink: NotificationSink> {
    enum OnTheWire {
        /// The registry's LISTEN/UNLISTEN round trip; `following`: the durable channels among
        /// its LISTENs, whose signal channels it LISTENs too.
        case sync(ListenStateMachine<ListenRegistry.Ready>.Sync, following: [ChannelKey])
        /// An empty query on an idle connection: any answer proves the path to PostgreSQL.
        case probe
        case query(ListenRegistry.Query, rows: [String?])
        case durable(DurableCommand, rows: [[String?]])
    }

    let listener: Listener<Sink>
    private let probeAfterIdle: Double
    private var answerDeadline: AnswerDeadline
    private var connection: PGConnection? = nil
    var onTheWire: OnTheWire? = nil
    /// Durable channels: which are durable, which are followed, and where each stream is.
    var streams = DurableStreams()
    /// The listener's own work for durable channels, sent before the registry's next command.
    var durableCommands: [DurableCommand] = []
    private var sentAt = 0.0
    private var lastInput = 0.0
    private var backoff = Backoff()
    private var outageStart: Double? = nil
    private var hasConnected = false
    private var failedAttempts = 0
    /// Set when the start-up attempts (`retries`) ran out: why the listener gave up.
    private(set) var gaveUp: String? = nil
    var logger: Logger { listener.logger }
    var registry: ListenRegistry { listener.registry }
    var isDurable: Bool { listener.durableMode != .off }

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
            if isDurable {
                switch prepareDurable(conn) {
                case .success:
                    break
                case .failure(let failure) where failure.isFatal:
                    gaveUp = failure.message
                    return
                case .failure(let failure):
                    fail(failure.message)
                    return
                }
            }
            if let failure = preparePresence(conn) {
                if failure.isFatal { gaveUp = failure.message } else { fail(failure.message) }
                return
            }
            switch RevocationSignal.prepare(conn) {
            case .success(let revocations):
                listener.revocations.replaceAll(with: revocations, now: WallClock.seconds())
            case .failure(let error):
                fail("reading the revocations: \(error)")
                return
            }
            guard conn.setNonBlocking() else {
                fail("cannot set the connection non-blocking: \(conn.errorMessage)")
                return
            }
            connection = conn
            onTheWire = nil
            durableCommands = []
            registry.connectionOpened()
            if isDurable { deliver(streams.keepOnly(registry.held(among: streams.followed))) }
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
        durableCommands = []
        streams.connectionLost()
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
            if waited < limit {
                timeout = limit - waited
            } else {
                // A thread that was not scheduled for a while may find the answer waiting in
                // the socket: look before counting the connection as lost.
                let readiness = pollReadiness(socket: conn.socket, forWriting: false, timeout: 0)
                guard readiness.socketReadable || readiness.socketError else {
                    lose("no answer from PostgreSQL for \(formatSeconds(waited)) s (deadline \(formatSeconds(limit)) s)")
                    return
                }
                timeout = 0
            }
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
        if !durableCommands.isEmpty {
            startDurableCommand(durableCommands.removeFirst(), conn)
            return
        }
        switch registry.nextCommand() {
        case .sync(let sync)?:
            let following = sync.listen.filter { streams.durable.contains($0) }
            let unfollowing = sync.unlisten.filter { streams.isFollowed($0) }
            var sql = ""
            let statements = [
                ("LISTEN", sync.listen.map(\.name)), ("UNLISTEN", sync.unlisten.map(\.name)),
                ("LISTEN", following.map(DurableStreams.signalChannel)),
                ("UNLISTEN", unfollowing.map(DurableStreams.signalChannel)),
            ]
            for (verb, channels) in statements {
                for channel in channels {
                    guard let quoted = conn.quoteIdentifier(channel) else {
                        lose("cannot quote a channel name: \(conn.errorMessage)")
                        return
                    }
                    sql += "\(verb) \(quoted);"
                }
            }
            for channel in unfollowing { deliver(streams.stopFollowing(channel)) }
            send(conn, sql, as: .sync(sync, following: following))
            logger.log(
                .debug, "LISTEN set update sent",
                [.listen: "\(sync.listen.count)", .unlisten: "\(sync.unlisten.count)"])
        case .query(let query)?:
            send(conn, query.sql, as: .query(query, rows: []))
        case nil:
            break
        }
    }

    mutating func send(_ conn: PGConnection, _ sql: String, parameters: [String]? = nil, as command: OnTheWire) {
        let sent = parameters.map { conn.sendQuery(sql, textParameters: $0) } ?? conn.sendQuery(sql)
        guard sent else {
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
                if result.status == PGRES_TUPLES_OK {
                    switch command {
                    case .query(let query, var rows):
                        for row in 0..<result.rowCount { rows.append(result.value(row: row, column: 0)) }
                        onTheWire = .query(query, rows: rows)
                    case .durable(let durable, var rows):
                        for row in 0..<result.rowCount {
                            rows.append((0..<result.columnCount).map { result.value(row: row, column: $0) })
                        }
                        onTheWire = .durable(durable, rows: rows)
                    default:
                        break
                    }
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
            case .durable:
                // The schema was checked when the connection opened: a failure now means it
                // changed under the server, or the session is in trouble. A new connection
                // checks it again and reads what was missed.
                while !conn.isBusy, conn.nextResult() != nil {}
                lose("durable channel query failed: \(error)")
                return
            }
        }
    }

    private mutating func finish(_ command: OnTheWire) {
        answerDeadline.answered(after: monotonicSeconds() - sentAt)
        switch command {
        case .sync(let sync, let following):
            guard isDurable else {
                registry.syncSucceeded(received: listener.sink.received)
                return
            }
            finishSync(sync, following: following)
        case .probe:
            break
        case .query(let query, let rows):
            query.completion(.success(rows))
        case .durable(let durable, let rows):
            finishDurableCommand(durable, rows: rows)
        }
    }

    private mutating func dispatchNotifications(_ conn: PGConnection) {
        var batch = listener.sink.makeBatch()
        let durable = isDurable
        conn.drainNotifications { channel, payload in
            let channelBytes = UnsafeRawBufferPointer(start: channel, count: strlen(channel))
            let payloadBytes = UnsafeRawBufferPointer(start: payload, count: strlen(payload))
            if channelBytes.elementsEqual(RevocationSignal.channelBytes) {
                revocationSignal(Array(payloadBytes))
            } else if let watchers = listener.presenceWatchers, channelBytes.elementsEqual(PresenceSignal.channelBytes)
            {
                guard watchers.isWatched else { return }
                if let signal = PresenceSignal(payload: Array(payloadBytes)) {
                    watchers.presenceChanged(signal)
                } else {
                    logger.log(
                        .warning, "ignoring a malformed presence signal", [.bytesReceived: "\(payloadBytes.count)"])
                }
            } else if durable, DurableStreams.isInternal(channelBytes) {
                durableSignal(channelBytes, payloadBytes, into: &batch)
            } else {
                batch.append(channel: channelBytes, payload: payloadBytes)
            }
            if batch.count >= Listener<Sink>.maxDispatchBatch {
                listener.deliver(batch)
                batch = listener.sink.makeBatch()
            }
        }
        if batch.count > 0 { listener.deliver(batch) }
    }

    /// With presence on: the schema (installed here when durable channels, which do it
    /// otherwise, are off), then `pgws:presence` LISTENed.
    private func preparePresence(_ conn: PGConnection) -> DurableSchema.Failure? {
        guard listener.presenceWatchers != nil else { return nil }
        if !isDurable, case .failure(let failure) = DurableSchema.prepare(conn, mode: .on) { return failure }
        if case .failure(let error) = PresenceSignal.prepare(conn) {
            return DurableSchema.Failure(isFatal: false, message: "listening for presence: \(error)")
        }
        return nil
    }

    /// `pgws.disconnect` or `pgws.revoke`, from any server's database session.
    private func revocationSignal(_ payload: [UInt8]) {
        guard let signal = RevocationSignal(payload: payload) else {
            logger.log(.warning, "ignoring a malformed revocation signal", [.bytesReceived: "\(payload.count)"])
            return
        }
        let reason = CloseReason.revoked(signal.reason)
        if let until = signal.until {
            logger.log(.notice, "revocation received", [.filter: "\(signal.filter.serialized)", .until: "\(until)"])
            listener.revocations.revoke(
                Revocations.Revocation(filter: signal.filter, until: until), reason: reason, now: WallClock.seconds())
        } else {
            logger.log(.notice, "disconnect received", [.filter: "\(signal.filter.serialized)"])
            listener.revocations.disconnect(matching: signal.filter, reason: reason)
        }
    }
}
