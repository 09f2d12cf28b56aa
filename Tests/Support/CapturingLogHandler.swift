import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresWebSockets

/// One line a server under test logged, with its metadata as text.
public struct LogRecord: Sendable, CustomStringConvertible {
    public let level: Logger.Level
    public let message: String
    public let metadata: [String: String]

    public subscript(key: LogKey) -> String? { metadata[key.rawValue] }

    public var description: String {
        "\(level) \(message) "
            + metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    }
}

/// Keeps the log records of a server under test, so a test can await one by its metadata
/// (`[.database: "restored"]`) or count them, and prints them too when PGWS_TEST_LOG_LEVEL asks.
public final class LogCapture: Sendable {
    private let pending = EventQueue<LogRecord>()
    private let all = NIOLockedValueBox<[LogRecord]>([])

    public init() {}

    func append(_ record: LogRecord) {
        all.withLockedValue { $0.append(record) }
        pending.push(record)
    }

    /// Every record so far.
    public var records: [LogRecord] { all.withLockedValue { $0 } }

    /// The records so far whose metadata holds every pair of `fields`.
    public func records(with fields: [LogKey: String]) -> [LogRecord] {
        records.filter { $0.matches(fields) }
    }

    /// Waits for a record whose metadata holds every pair of `fields`, consuming the records
    /// before it.
    @discardableResult
    public func waitForRecord(with fields: [LogKey: String], timeout: Double = 20) async throws -> LogRecord {
        let deadline = ContinuousClock.now + .milliseconds(Int64(patience(timeout) * 1000))
        while true {
            let left = deadline - ContinuousClock.now
            let remaining = left.inSeconds
            guard remaining > 0, let record = await pending.nextIfAny(within: remaining) else {
                throw WaitTimeout(what: "log record with \(fields)")
            }
            if record.matches(fields) { return record }
        }
    }
}

extension LogRecord {
    func matches(_ fields: [LogKey: String]) -> Bool {
        fields.allSatisfy { self[$0.key] == $0.value }
    }
}

struct CapturingLogHandler: LogHandler {
    let capture: LogCapture
    let echo: Logger.Level
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let fields = metadata.merging(event.metadata ?? [:]) { $1 }.mapValues { "\($0)" }
        let record = LogRecord(level: event.level, message: "\(event.message)", metadata: fields)
        capture.append(record)
        if event.level >= echo { print("[server] \(record)") }
    }
}
