import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// PostgreSQL could not be asked who is on a channel.
struct PresenceUnavailable: Error {
    let reason: String
}

/// Keeps this server's rows of `pgws.presence` in step with its `PresenceBook`, in batches
/// (`pgws.presence_apply`), says every `heartbeat` that the server is alive and sweeps the
/// rows of servers that stopped saying so (`pgws.presence_heartbeat`), and answers who is on
/// a channel across servers; on a connection of its own (`pgws-presence` thread), as a
/// `Service`. On graceful shutdown the server's rows go at once (`pgws.presence_drop`).
final class PresenceWriter: Service, Sendable {
    typealias MembersCompletion = @Sendable (Result<[JSONValue], PresenceUnavailable>) -> Void
    /// Member lists asked and not yet answered; more are answered `unavailable` at once.
    static let maxPendingQueries = 256

    private struct Query: Sendable {
        let channel: String
        let completion: MembersCompletion
    }

    private struct Shared: Sendable {
        var queries: [Query] = []
        var stopping = false
    }

    /// This process's name in `pgws.presence.server_id`: random, so a restart is a new server.
    let serverID: String
    let book: PresenceBook
    private let conninfo: String
    private let status: DatabaseStatus
    private let logger: Logger
    private let shared = NIOLockedValueBox(Shared())

    init(conninfo: String, book: PresenceBook, status: DatabaseStatus, logger: Logger) {
        self.conninfo = conninfo
        self.book = book
        self.status = status
        self.logger = logger
        var generator = SystemRandomNumberGenerator()
        serverID = (0..<4).map { _ in String(generator.next() as UInt32, radix: 16) }.joined(separator: "-")
    }

    /// The distinct members of `channel` on every server; `completion` runs on any thread.
    func members(of channel: String, completion: @escaping MembersCompletion) {
        let accepted = shared.withLockedValue { shared -> Bool in
            guard !shared.stopping, shared.queries.count < Self.maxPendingQueries else { return false }
            shared.queries.append(Query(channel: channel, completion: completion))
            return true
        }
        if accepted {
            book.wake.signal()
        } else {
            completion(.failure(PresenceUnavailable(reason: "too many presence requests waiting for PostgreSQL")))
        }
    }

    func run() async {
        await runServiceThread(name: "pgws-presence", stop: stop) { self.drive() }
    }

    private func stop() {
        shared.withLockedValue { $0.stopping = true }
        book.wake.signal()
    }

    // MARK: - The thread

    private func drive() {
        var connection: PGConnection? = nil
        var backoff = Backoff()
        /// The rows PostgreSQL has of this server, as far as it knows.
        var written = Set<PresenceBook.Key>()
        var registered = false
        var failing = false
        var nextHeartbeat = 0.0
        let flushDelay = book.settings.flushDelay.seconds
        while true {
            let (query, stopping) = shared.withLockedValue { ($0.queries.first, $0.stopping) }
            if stopping {
                if let connection, registered { drop(on: connection) }
                failQueries(reason: "the server is stopping")
                return
            }
            let now = monotonicSeconds()
            let dirtySince = book.dirtySince
            let flushDue = dirtySince.map { now >= $0 + flushDelay } ?? false
            let heartbeatDue = now >= nextHeartbeat
            if !status.isUp, query != nil {
                // Nobody can be asked while the database is down: no client waits on it.
                failQueries(reason: "the database is unavailable")
                continue
            }
            guard status.isUp, query != nil || flushDue || heartbeatDue else {
                var wait = max(0, nextHeartbeat - now)
                if let dirtySince { wait = min(wait, dirtySince + flushDelay - now) }
                _ = book.wake.wait(timeout: min(1, max(0.005, wait)))
                continue
            }
            if connection == nil {
                switch PGConnection.connect(conninfo, applicationName: "postgres-websockets presence") {
                case .success(let conn):
                    connection = conn
                case .failure(let error):
                    logger.log(.debug, "presence cannot connect", [.error: "\(error.message)"])
                    _ = book.wake.wait(timeout: backoff.nextDelay())
                    continue
                }
            }
            guard let conn = connection else { continue }
            var outcome: Result<Void, DatabaseError> = .success(())
            if heartbeatDue {
                outcome = heartbeat(on: conn).map { known in
                    if registered, !known { resync(&written) }
                    registered = true
                    nextHeartbeat = monotonicSeconds() + book.settings.heartbeat.seconds
                }
            }
            if case .success = outcome, flushDue {
                outcome = flush(on: conn, written: &written).map { known in
                    if registered, !known { resync(&written) }
                    registered = true
                }
            }
            if case .success = outcome, let query {
                outcome = answer(query, on: conn)
            }
            switch outcome {
            case .success:
                if failing { logger.log(.notice, "presence written again", [:]) }
                failing = false
                backoff.reset()
            case .failure(let error):
                if !failing {
                    logger.log(.warning, "presence cannot be written, will retry", [.error: "\(error)"])
                }
                failing = true
                if error.kind == .connection { connection = nil }
                _ = book.wake.wait(timeout: backoff.nextDelay())
            }
        }
    }

    /// PostgreSQL dropped this server's rows (it was taken for dead): write them all again.
    private func resync(_ written: inout Set<PresenceBook.Key>) {
        logger.log(.notice, "presence rows were swept by another server; writing them again", [:])
        written = []
        book.markAllDirty()
    }

    private func heartbeat(on conn: PGConnection) -> Result<Bool, DatabaseError> {
        conn.execute(
            "SELECT pgws.presence_heartbeat($1, make_interval(secs => $2::double precision))",
            [serverID, "\(book.settings.staleAfter.seconds)"]
        ).map { $0.first?.first == "t" }
    }

    /// Sends what changed since the last batch; on failure it stays to be sent.
    private func flush(on conn: PGConnection, written: inout Set<PresenceBook.Key>) -> Result<Bool, DatabaseError> {
        let changes = book.takeChanges()
        var added = JSONWriter(capacity: 256)
        var removed = JSONWriter(capacity: 64)
        added.raw("[")
        removed.raw("[")
        var adds: [PresenceBook.Key] = []
        var removes: [PresenceBook.Key] = []
        for (key, row) in changes {
            if let row {
                guard !written.contains(key) else { continue }
                if !adds.isEmpty { added.raw(",") }
                added.raw("{\"socket\":")
                added.raw(utf8: "\(key.socket)")
                added.raw(",\"channel\":")
                added.string(key.channel)
                if let member = row.member {
                    added.raw(",\"member_id\":")
                    added.raw(utf8: member.id)
                    added.raw(",\"member\":")
                    added.raw(utf8: member.shown)
                }
                added.raw(",\"claims\":")
                added.raw(utf8: row.claims)
                added.raw("}")
                adds.append(key)
            } else if written.contains(key) {
                if !removes.isEmpty { removed.raw(",") }
                removed.raw("{\"socket\":")
                removed.raw(utf8: "\(key.socket)")
                removed.raw(",\"channel\":")
                removed.string(key.channel)
                removed.raw("}")
                removes.append(key)
            }
        }
        added.raw("]")
        removed.raw("]")
        guard !adds.isEmpty || !removes.isEmpty else { return .success(true) }
        let result = conn.execute(
            "SELECT pgws.presence_apply($1, $2::jsonb, $3::jsonb)",
            [serverID, String(decoding: added.bytes, as: UTF8.self), String(decoding: removed.bytes, as: UTF8.self)])
        switch result {
        case .success(let rows):
            written.formUnion(adds)
            written.subtract(removes)
            return .success(rows.first?.first == "t")
        case .failure(let error):
            book.markDirty(adds + removes)
            return .failure(error)
        }
    }

    private func answer(_ query: Query, on conn: PGConnection) -> Result<Void, DatabaseError> {
        let result = conn.execute(
            "SELECT member::text FROM pgws.presence WHERE channel = $1 AND member_id IS NOT NULL AND server_id <> $2",
            [query.channel, serverID])
        if case .failure(let error) = result, error.kind == .connection { return .failure(error) }
        shared.withLockedValue { shared in
            if !shared.queries.isEmpty { shared.queries.removeFirst() }
        }
        switch result {
        case .success(let rows):
            var seen = Set<String>()
            var members: [(id: String, member: JSONValue)] = []
            for member in book.members(of: query.channel) {
                guard let shown = try? JSONParser.parse(member.shown), seen.insert(member.id).inserted else { continue }
                members.append((member.id, shown))
            }
            for row in rows {
                guard let text = row.first ?? nil, let shown = try? JSONParser.parse(text), let id = shown["id"],
                    seen.insert(id.serialized).inserted
                else { continue }
                members.append((id.serialized, shown))
            }
            query.completion(.success(members.sorted { $0.id < $1.id }.map(\.member)))
        case .failure(let error):
            query.completion(.failure(PresenceUnavailable(reason: "reading presence failed: \(error.message)")))
        }
        return .success(())
    }

    private func drop(on conn: PGConnection) {
        if case .failure(let error) = conn.execute("SELECT pgws.presence_drop(ARRAY[$1])", [serverID]) {
            logger.log(.warning, "presence rows not removed at shutdown (others sweep them)", [.error: "\(error)"])
        }
    }

    private func failQueries(reason: String) {
        let queries = shared.withLockedValue { shared in
            defer { shared.queries = [] }
            return shared.queries
        }
        for query in queries { query.completion(.failure(PresenceUnavailable(reason: reason))) }
    }
}
