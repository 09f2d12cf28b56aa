/// A NOTIFY stream sent from the benchmark's own libpq connection.
struct NotifyStream: Sendable {
    enum Kind: Sendable {
        /// One `SELECT pg_notify($1, $2)` statement (its own transaction) per NOTIFY, paced
        /// to `perSecond`.
        case rate(perSecond: Double)
        /// One `SELECT pg_notify($1, $2)` statement per NOTIFY, back to back: each waits for
        /// the previous one's commit.
        case singles
        /// Statements of `batch` NOTIFYs each (`pg_notify` over `generate_series`, one
        /// transaction per statement), sent back to back, each after the previous answer.
        case burst(batch: Int)
        /// One NOTIFY on each of `count` channels `<channel><seq>`, `batch` per statement.
        case channels(batch: Int)
    }

    var phase: Int
    var channel: String
    var count: Int
    var payloadSize: Int
    var kind: Kind
    /// Published with `pgws.publish` (stored, on a durable channel) instead of `pg_notify`.
    var durable = false

    var methodText: String {
        switch kind {
        case .rate(let perSecond):
            "\(count) single-statement NOTIFYs (SELECT pg_notify, autocommit) paced at \(Int(perSecond))/s"
        case .singles:
            "\(count) single-statement NOTIFYs (SELECT pg_notify, autocommit: one transaction each) back to back on one connection"
        case .burst(let batch):
            "\(count) NOTIFYs as back-to-back statements of \(batch) (SELECT pg_notify(...) FROM generate_series, one transaction each)"
        case .channels(let batch):
            "one NOTIFY on each of \(count) channels, \(batch) per statement (pg_notify over generate_series)"
        }
    }
}

struct SendReport: Sendable {
    /// Wall clock (µs) read just before the first statement went out, and after the last
    /// statement's answer.
    var firstSend: Int64 = 0
    var lastAnswer: Int64 = 0
    var statements = 0
    var notifies = 0

    var seconds: Double { Double(lastAnswer - firstSend) / 1e6 }
}

enum NotifySender {
    static let batchSQL =
        "SELECT count(pg_notify($1, \(Payload.sqlExpression(phase: "$2", seq: "g", sentMicros: "$3", size: "$4::int"))))"
        + " FROM generate_series($5::int, $6::int) AS g"
    static let durableBatchSQL =
        "SELECT count(pgws.publish($1, \(Payload.sqlExpression(phase: "$2", seq: "g", sentMicros: "$3", size: "$4::int"))))"
        + " FROM generate_series($5::int, $6::int) AS g"
    static let channelsSQL =
        "SELECT count(pg_notify($1 || g, \(Payload.sqlExpression(phase: "$2", seq: "g", sentMicros: "$3", size: "$4::int"))))"
        + " FROM generate_series($5::int, $6::int) AS g"

    /// Sends the stream on a fresh connection, on a thread of its own. The connection is
    /// made before the first timestamp.
    static func send(_ stream: NotifyStream, uri: String) async throws -> SendReport {
        try await onThread("bench-sender") {
            let session = try PGSession(uri: uri)
            return try send(stream, on: session)
        }
    }

    static func send(_ stream: NotifyStream, on session: PGSession) throws -> SendReport {
        var report = SendReport()
        switch stream.kind {
        case .rate, .singles:
            let start = Clock.monotonic()
            for seq in 0..<stream.count {
                if case .rate(let perSecond) = stream.kind { Clock.sleep(until: start + Double(seq) / perSecond) }
                let now = Clock.wallMicros()
                if seq == 0 { report.firstSend = now }
                let payload = Payload.notify(phase: stream.phase, seq: seq, sentMicros: now, size: stream.payloadSize)
                try session.exec(
                    stream.durable ? "SELECT pgws.publish($1, $2)" : "SELECT pg_notify($1, $2)",
                    [stream.channel, payload])
                report.statements += 1
                report.notifies += 1
            }
        case .burst(let batch), .channels(let batch):
            let sql =
                if case .channels = stream.kind { channelsSQL } else { stream.durable ? durableBatchSQL : batchSQL }
            var seq = 0
            while seq < stream.count {
                let last = min(stream.count, seq + max(1, batch)) - 1
                let now = Clock.wallMicros()
                if seq == 0 { report.firstSend = now }
                try session.exec(
                    sql,
                    [
                        stream.channel, String(stream.phase), String(now), String(stream.payloadSize), String(seq),
                        String(last),
                    ])
                report.statements += 1
                report.notifies += last - seq + 1
                seq = last + 1
            }
        }
        report.lastAnswer = Clock.wallMicros()
        return report
    }
}
