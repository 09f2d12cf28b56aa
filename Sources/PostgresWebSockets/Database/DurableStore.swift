import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// A page of a durable channel's messages, read from the table.
struct DurablePage: Sendable {
    var rows: [(offset: UInt64, payload: ByteBuffer)]
    /// The table held nothing after the last row when it was read.
    var complete: Bool
}

/// What the event loops ask of the table: a page of a channel's messages after an offset.
/// The answer comes on any thread; nil when the server is stopping.
protocol DurableReading: Sendable {
    func readPage(
        channel: ChannelKey, after: UInt64, completion: @escaping @Sendable (DurablePage?) -> Void)
}

/// Reads durable channels' messages for sockets that resume or catch up from the table, and
/// prunes what is past retention, on a connection of its own (`pgws-durable` thread), as a
/// `Service`. Reads wait while the database is down and are answered once it is back.
final class DurableStore: Service, DurableReading, Sendable {
    private struct Request: Sendable {
        let channel: ChannelKey
        let after: UInt64
        let completion: @Sendable (DurablePage?) -> Void
    }

    private struct Shared: Sendable {
        var requests: [Request] = []
        var stopping = false
    }

    private let conninfo: String
    private let settings: DurableSettings
    private let status: DatabaseStatus
    private let logger: Logger
    private let shared = NIOLockedValueBox(Shared())
    private let wake = WakeSignal()

    static let pageSQL = """
        SELECT "offset", payload, total FROM (
            SELECT "offset", payload, count(*) OVER () AS total,
                sum(octet_length(payload)) OVER (ORDER BY "offset") - octet_length(payload) AS before
            FROM (
                SELECT "offset", payload FROM pgws.messages
                WHERE channel = $1 AND "offset" > $2 ORDER BY "offset" LIMIT $3
            ) AS limited
        ) AS page
        WHERE before < $4
        ORDER BY "offset"
        """

    init(conninfo: String, settings: DurableSettings, status: DatabaseStatus, logger: Logger) {
        self.conninfo = conninfo
        self.settings = settings
        self.status = status
        self.logger = logger
    }

    func readPage(channel: ChannelKey, after: UInt64, completion: @escaping @Sendable (DurablePage?) -> Void) {
        let accepted = shared.withLockedValue { shared -> Bool in
            guard !shared.stopping else { return false }
            shared.requests.append(Request(channel: channel, after: after, completion: completion))
            return true
        }
        if accepted { wake.signal() } else { completion(nil) }
    }

    func run() async {
        await runServiceThread(name: "pgws-durable", stop: stop) { self.drive() }
    }

    private func stop() {
        let requests = shared.withLockedValue { shared in
            shared.stopping = true
            defer { shared.requests = [] }
            return shared.requests
        }
        requests.forEach { $0.completion(nil) }
        wake.signal()
    }

    // MARK: - The thread

    private func drive() {
        var connection: PGConnection? = nil
        var backoff = Backoff()
        var nextPrune = monotonicSeconds() + settings.pruneInterval.seconds
        while true {
            let (request, stopping) = shared.withLockedValue { shared in
                (shared.requests.first, shared.stopping)
            }
            if stopping { return }
            let pruneDue = monotonicSeconds() >= nextPrune
            // Connected as soon as the database is up, so the first resume does not wait for it.
            guard status.isUp, request != nil || pruneDue || connection == nil else {
                let wait = request == nil ? min(1, max(0.01, nextPrune - monotonicSeconds())) : 1
                _ = wake.wait(timeout: wait)
                continue
            }
            if connection == nil {
                switch PGConnection.connect(conninfo, applicationName: "postgres-websockets durable") {
                case .success(let conn):
                    // A page is the next rows of one channel in offset order: the primary key's
                    // order. Right after a burst of publishes, statistics are stale and the
                    // planner chose a bitmap scan of every newer row plus a sort, for every
                    // page (replay of 100,000 rows went quadratic). This connection runs only
                    // these reads and pruning, so it never takes that path.
                    if case .failure(let error) = conn.execute("SET enable_bitmapscan = off; SET enable_sort = off") {
                        logger.log(.debug, "durable reader cannot set its plan settings", [.error: "\(error)"])
                    }
                    connection = conn
                    backoff.reset()
                case .failure(let error):
                    logger.log(.debug, "durable reader cannot connect", [.error: "\(error.message)"])
                    _ = wake.wait(timeout: backoff.nextDelay())
                    continue
                }
            }
            guard let conn = connection else { continue }
            guard request != nil || pruneDue else { continue }
            if let request {
                switch read(request, on: conn) {
                case .success(let page):
                    shared.withLockedValue { shared in
                        if !shared.requests.isEmpty { shared.requests.removeFirst() }
                    }
                    request.completion(page)
                case .failure(let error) where error.kind == .connection:
                    logger.log(.debug, "durable read failed, will retry", [.error: "\(error)"])
                    connection = nil
                case .failure(let error):
                    // The schema changed under the server (dropped, say): the socket gets
                    // what the log holds and nothing from the table.
                    logger.log(
                        .warning, "durable read refused", [.channels: "\(request.channel.name)", .error: "\(error)"])
                    shared.withLockedValue { shared in
                        if !shared.requests.isEmpty { shared.requests.removeFirst() }
                    }
                    request.completion(DurablePage(rows: [], complete: true))
                }
                continue
            }
            nextPrune = monotonicSeconds() + settings.pruneInterval.seconds
            if case .failure(let error) = prune(on: conn) {
                logger.log(.warning, "pruning durable messages failed", [.error: "\(error)"])
                if error.kind == .connection { connection = nil }
            }
        }
    }

    private func read(_ request: Request, on conn: PGConnection) -> Result<DurablePage, DatabaseError> {
        conn.execute(
            Self.pageSQL,
            [request.channel.name, "\(request.after)", "\(settings.replayPageRows)", "\(settings.replayPageBytes)"]
        ).map { rows in
            var page = DurablePage(rows: [], complete: true)
            var total = 0
            for row in rows {
                guard let offset = row[0].flatMap({ UInt64($0) }), let payload = row[1] else { continue }
                page.rows.append((offset, ByteBuffer(string: payload)))
                total = row[2].flatMap { Int($0) } ?? total
            }
            page.complete = total < settings.replayPageRows && page.rows.count == total
            return page
        }
    }

    /// Prunes in transactions of at most 10,000 rows until nothing is left to prune.
    private func prune(on conn: PGConnection) -> Result<Void, DatabaseError> {
        var total = 0
        while true {
            switch conn.execute("SELECT pgws.prune(10000)") {
            case .success(let rows):
                let deleted = rows.first?.first.flatMap { $0 }.flatMap { Int($0) } ?? 0
                total += deleted
                if deleted < 10000 {
                    if total > 0 { logger.log(.debug, "pruned durable messages", [.messages: "\(total)"]) }
                    return .success(())
                }
            case .failure(let error):
                return .failure(error)
            }
        }
    }
}
