import CLibPQ
import Foundation

/// A blocking libpq connection for the benchmark's own SQL: the NOTIFY senders and the
/// bare LISTEN connections. One thread at a time uses it (libpq's rule).
final class PGSession: @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    let connection: OpaquePointer

    init(uri: String) throws {
        guard let conn = PQconnectdb(uri) else { throw Failure(description: "libpq: out of memory") }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(conn))
            PQfinish(conn)
            throw Failure(description: "cannot connect to PostgreSQL: \(message)")
        }
        connection = conn
    }

    deinit {
        PQfinish(connection)
    }

    /// Runs one statement (autocommit: its own transaction) with text parameters.
    @discardableResult
    func exec(_ sql: String, _ parameters: [String] = []) throws -> [[String?]] {
        let cStrings = parameters.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        let values = cStrings.map { UnsafePointer($0) }
        guard let result = PQexecParams(connection, sql, Int32(parameters.count), nil, values, nil, nil, 0) else {
            throw Failure(description: String(cString: PQerrorMessage(connection)))
        }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK else {
            throw Failure(description: "\(sql.prefix(60)): \(String(cString: PQresultErrorMessage(result)))")
        }
        var rows: [[String?]] = []
        for row in 0..<PQntuples(result) {
            rows.append(
                (0..<PQnfields(result)).map { column in
                    PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column))
                })
        }
        return rows
    }

    func listen(_ channel: String) throws {
        guard let quoted = PQescapeIdentifier(connection, channel, channel.utf8.count) else {
            throw Failure(description: String(cString: PQerrorMessage(connection)))
        }
        defer { PQfreemem(quoted) }
        try exec("LISTEN \(String(cString: quoted))")
    }
}

/// Runs blocking work (libpq, pacing) on a thread of its own, never on Swift's
/// cooperative pool.
func onThread<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try body() })
        }
        thread.name = name
        thread.start()
    }
}
