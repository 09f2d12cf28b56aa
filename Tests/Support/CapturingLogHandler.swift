import Logging
import NIOConcurrencyHelpers

/// Keeps the log lines of a server under test, so a test can await a line ("database
/// connection restored") or count them, and prints them too when PGWS_TEST_LOG_LEVEL asks.
public final class LogCapture: Sendable {
    public let lines = EventQueue<String>()
    private let all = NIOLockedValueBox<[String]>([])

    public init() {}

    func append(_ line: String) {
        all.withLockedValue { $0.append(line) }
        lines.push(line)
    }

    /// Every line so far.
    public var text: [String] { all.withLockedValue { $0 } }

    /// Waits for a line containing `text`, consuming the lines before it.
    @discardableResult
    public func waitForLine(containing text: String, timeout: Double = 20) async throws -> String {
        let deadline = ContinuousClock.now + .milliseconds(Int64(patience(timeout) * 1000))
        while true {
            let remaining =
                Double((deadline - ContinuousClock.now).components.seconds)
                + Double((deadline - ContinuousClock.now).components.attoseconds) / 1e18
            guard remaining > 0, let line = await lines.nextIfAny(within: remaining) else {
                throw WaitTimeout(what: "log line containing '\(text)'")
            }
            if line.contains(text) { return line }
        }
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
        let fields = metadata.merging(event.metadata ?? [:]) { $1 }
            .sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let line = "\(event.level) \(event.message) \(fields)"
        capture.append(line)
        if event.level >= echo { print("[server] " + line) }
    }
}
