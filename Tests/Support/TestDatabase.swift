import CLibPQ
import Dispatch
import Foundation

/// A plain libpq session for tests and the benchmark: runs SQL, LISTENs, and waits for
/// notifications. All libpq calls happen on the session's own serial queue, so async
/// tests never block Swift's cooperative threads.
public final class TestDatabase: @unchecked Sendable {
    public struct Error: Swift.Error, CustomStringConvertible {
        public let description: String
    }

    public struct Received: Sendable, Equatable {
        public let channel: String
        public let payload: String
        public let senderPID: Int32
    }

    private let connection: OpaquePointer
    private let queue = DispatchQueue(label: "test-database")
    private var pending: [Received] = []

    public init(uri: String) throws {
        guard let conn = PQconnectdb(uri) else { throw Error(description: "out of memory") }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(conn))
            PQfinish(conn)
            throw Error(description: "cannot connect: \(message)")
        }
        connection = conn
    }

    deinit {
        PQfinish(connection)
    }

    public var backendPID: Int32 { queue.sync { PQbackendPID(connection) } }

    /// Runs `sql` (text parameters $1...) and returns every row, NULLs as nil.
    @discardableResult
    public func query(_ sql: String, _ parameters: [String] = []) async throws -> [[String?]] {
        try await onQueue { try self.querySync(sql, parameters) }
    }

    /// Runs several statements in one simple query (a schema script, say).
    public func run(script: String) async throws {
        try await onQueue {
            guard let result = PQexec(self.connection, script) else {
                throw Error(description: String(cString: PQerrorMessage(self.connection)))
            }
            defer { PQclear(result) }
            let status = PQresultStatus(result)
            guard status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK else {
                throw Error(description: String(cString: PQresultErrorMessage(result)))
            }
        }
    }

    public func querySync(_ sql: String, _ parameters: [String] = []) throws -> [[String?]] {
        let cStrings = parameters.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        let values = cStrings.map { UnsafePointer($0) }
        guard let result = PQexecParams(connection, sql, Int32(parameters.count), nil, values, nil, nil, 0) else {
            throw Error(description: String(cString: PQerrorMessage(connection)))
        }
        defer { PQclear(result) }
        collectNotifications()
        let status = PQresultStatus(result)
        guard status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK else {
            throw Error(description: String(cString: PQresultErrorMessage(result)))
        }
        var rows: [[String?]] = []
        for row in 0..<PQntuples(result) {
            var values: [String?] = []
            for column in 0..<PQnfields(result) {
                values.append(
                    PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column)))
            }
            rows.append(values)
        }
        return rows
    }

    /// LISTENs on `channel` (quoted as an identifier).
    public func listen(_ channel: String) async throws {
        try await onQueue {
            guard let quoted = PQescapeIdentifier(self.connection, channel, channel.utf8.count) else {
                throw Error(description: String(cString: PQerrorMessage(self.connection)))
            }
            defer { PQfreemem(quoted) }
            _ = try self.querySync("LISTEN \(String(cString: quoted))")
        }
    }

    /// The server processes of the sessions named `application` (the bridge's
    /// "postgres-websockets listener" and "postgres-websockets notifier"), for tests that
    /// freeze or end them.
    public func backendPIDs(application: String) async throws -> [Int32] {
        try await query("SELECT pid FROM pg_stat_activity WHERE application_name = $1", [application])
            .compactMap { $0[0].flatMap { Int32($0) } }
    }

    /// Sends `NOTIFY channel, payload` through pg_notify.
    public func notify(_ channel: String, _ payload: String) async throws {
        try await query("SELECT pg_notify($1, $2)", [channel, payload])
    }

    /// The next notification, waiting up to `timeout` seconds for it.
    public func nextNotification(timeout: Double = 10) async throws -> Received {
        try await nextNotification(within: patience(timeout))
    }

    private func nextNotification(within timeout: Double) async throws -> Received {
        try await onQueue {
            let deadline = Date().addingTimeInterval(timeout)
            while self.pending.isEmpty {
                let remaining = deadline.timeIntervalSinceNow
                guard remaining > 0 else { throw Error(description: "no notification within \(timeout) s") }
                var fd = pollfd(fd: PQsocket(self.connection), events: Int16(POLLIN), revents: 0)
                _ = poll(&fd, 1, Int32(min(remaining, 1) * 1000))
                guard PQconsumeInput(self.connection) == 1 else {
                    throw Error(description: String(cString: PQerrorMessage(self.connection)))
                }
                self.collectNotifications()
            }
            return self.pending.removeFirst()
        }
    }

    /// Collects `count` notifications (in arrival order) within `timeout` seconds.
    public func notifications(count: Int, timeout: Double = 30) async throws -> [Received] {
        var received: [Received] = []
        let timeout = patience(timeout)
        let deadline = Date().addingTimeInterval(timeout)
        while received.count < count {
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else {
                throw Error(description: "got \(received.count) of \(count) notifications within \(timeout) s")
            }
            received.append(try await nextNotification(within: remaining))
        }
        return received
    }

    /// Notifications that arrived so far, without waiting for more.
    public func drainNotifications() async throws -> [Received] {
        try await onQueue {
            _ = PQconsumeInput(self.connection)
            self.collectNotifications()
            defer { self.pending = [] }
            return self.pending
        }
    }

    private func collectNotifications() {
        while let notify = PQnotifies(connection) {
            pending.append(
                Received(
                    channel: String(cString: notify.pointee.relname),
                    payload: String(cString: notify.pointee.extra),
                    senderPID: notify.pointee.be_pid))
            PQfreemem(notify)
        }
    }

    private func onQueue<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result { try body() })
            }
        }
    }
}
