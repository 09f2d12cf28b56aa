import ArgumentParser
import Logging
import PostgresWebSockets
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

@main
struct PostgresWebSocketsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postgres-websockets",
        abstract: "Bridges PostgreSQL LISTEN/NOTIFY and WebSocket clients authorized by JWTs.",
        discussion:
            "Every setting of CONFIG_FILE can be given or overridden by its PGWS_* environment variable; see README.md."
    )

    @Argument(help: "Configuration file (key = value lines, as in sample.conf).")
    var configFile: String?

    @Flag(help: "Print the SQL of the pgws schema (durable channels) and exit, for durable = check.")
    var printSchema = false

    func run() async throws {
        if printSchema {
            print(DurableSchema.script, terminator: "")
            return
        }
        let configuration: Configuration
        do {
            configuration = try Configuration.load(path: configFile, environment: currentEnvironment())
        } catch {
            fail("configuration error: \(error.message)")
        }
        let level = configuration.logLevel
        switch configuration.logFormat {
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        case .json:
            LoggingSystem.bootstrap { _ in
                var handler = JSONLogHandler.standardError()
                handler.logLevel = level
                return handler
            }
        }
        let logger = Logger(label: "postgres-websockets")
        let bridge: Bridge
        do {
            bridge = try Bridge(configuration: configuration, logger: logger)
        } catch {
            fail("configuration error: \(error.message)")
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: bridge)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        do {
            try await group.run()
        } catch {
            fail("postgres-websockets stopped: \(error)")
        }
    }

    /// One line on stderr and exit status 1: what a bad setting gets, never a trace.
    private func fail(_ message: String) -> Never {
        let line = Array((message + "\n").utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        Glibc.exit(1)
    }
}

private func currentEnvironment() -> [String: String] {
    var result: [String: String] = [:]
    var pointer = environ
    while let entry = pointer.pointee {
        let text = String(cString: entry)
        if let equals = text.firstIndex(of: "=") {
            result[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        pointer += 1
    }
    return result
}
