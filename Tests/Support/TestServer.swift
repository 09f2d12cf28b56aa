import Foundation
import Logging
import PostgresWebSockets

/// The bridge running inside the test process on a free port, against a real database.
public final class TestServer: Sendable {
    public let bridge: Bridge
    public let port: Int
    /// Everything the server logged at info level and above.
    public let log: LogCapture

    private init(bridge: Bridge, port: Int, log: LogCapture) {
        self.bridge = bridge
        self.port = port
        self.log = log
    }

    private static func resolve(_ databaseURI: String?) async -> String {
        if let databaseURI { return databaseURI }
        return await TemporaryPostgres.sharedURI()
    }

    public static func configuration(databaseURI: String) -> Configuration {
        var config = Configuration(databaseURI: databaseURI, jwtSecret: Array(TestTokens.secret.utf8))
        config.server.port = 0
        return config
    }

    /// Starts a server; `configure` adjusts the configuration first. Waits until the
    /// listener is connected unless `waitForDatabase` is false.
    public static func start(
        databaseURI: String? = nil,
        waitForDatabase: Bool = true,
        _ configure: (inout Configuration) -> Void = { _ in }
    ) async throws -> TestServer {
        let uri = await resolve(databaseURI)
        var config = configuration(databaseURI: uri)
        if await TemporaryPostgres.isInSharedCluster(uri) {
            // The shared cluster carries every parallel test's listener on two cores, and a
            // LISTENing backend reads each test's bursts before it answers a probe: answers can
            // lag past the production floor there. Tests of the probe use a cluster of their own.
            config.listener.probeTimeout = .seconds(5)
        }
        if runsUnderSanitizer {
            // Sockets that read slowly on purpose answer pings late under a sanitizer, where
            // everything is several times slower: tests of pings set their own interval.
            config.limits.pingInterval = .fromSeconds(600)
            // The same slowness, and four suites' servers sharing two cores, can hold a request
            // or a client's reading of a close frame past the production bounds: tests of those
            // bounds set their own.
            config.limits.handshakeTimeout = .fromSeconds(60)
            config.limits.pongTimeout = .fromSeconds(60)
        }
        configure(&config)
        let capture = LogCapture()
        let echo = testLogLevel
        var logger = Logger(label: "bridge-under-test") { _ in CapturingLogHandler(capture: capture, echo: echo) }
        // What the configuration asks for (info unless a test lowers it), and what is echoed.
        logger.logLevel = min(echo, config.logLevel)
        let bridge = try Bridge(configuration: config, logger: logger)
        let port = try await bridge.start()
        let server = TestServer(bridge: bridge, port: port, log: capture)
        if waitForDatabase {
            try await server.waitUntilDatabaseUp()
        }
        return server
    }

    /// Log level of servers under test: `PGWS_TEST_LOG_LEVEL`, else warning.
    public static var testLogLevel: Logger.Level {
        ProcessInfo.processInfo.environment["PGWS_TEST_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
    }

    public func waitUntilDatabaseUp(timeout: Double = 20) async throws {
        // Polled: the bridge's own wait cannot be cancelled, so a group racing it against a
        // timer would wait for it forever when the database never comes up.
        let bridge = self.bridge
        try await waitUntil(timeout: timeout, "database up", every: 0.01) { bridge.isDatabaseUp }
    }

    /// The channels the listener LISTENs on for sockets: all but the listen channel and
    /// `pgws:revoke`, which are LISTENed for the server's life.
    public func socketChannelsListened() async throws -> [String] {
        let always = [bridge.configuration.channels.listenChannel, TestServer.revokeChannel]
        return try await bridge.listeningChannels().filter { !always.contains($0) }
    }

    /// Where `pgws.disconnect` and `pgws.revoke` signal every server.
    public static let revokeChannel = "pgws:revoke"

    public func shutdown() async {
        await bridge.shutdown()
    }

    /// Runs `body` with a started server and always shuts it down.
    public static func with<T>(
        databaseURI: String? = nil,
        waitForDatabase: Bool = true,
        _ configure: (inout Configuration) -> Void = { _ in },
        _ body: (TestServer) async throws -> T
    ) async throws -> T {
        let server = try await start(
            databaseURI: await resolve(databaseURI), waitForDatabase: waitForDatabase, configure)
        do {
            let result = try await body(server)
            await server.shutdown()
            return result
        } catch {
            await server.shutdown()
            throw error
        }
    }

    public func connect(
        _ path: String, headers: [(String, String)] = [], answerPings: Bool = true, tls: WebSocketClient.TLS? = nil
    ) async throws -> WebSocketClient {
        try await WebSocketClient.connect(port: port, path: path, headers: headers, answerPings: answerPings, tls: tls)
    }

    /// A socket reading and writing `channel`, with a fresh token.
    public func connect(channel: String, mode: String = "rw", tls: WebSocketClient.TLS? = nil) async throws
        -> WebSocketClient
    {
        try await connect("/\(Self.pathSegment(channel))/\(TestTokens.mint(mode: mode))", tls: tls)
    }

    /// Percent-encodes everything but unreserved characters, as a browser's
    /// encodeURIComponent would.
    public static func pathSegment(_ name: String) -> String {
        name.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~")))
            ?? name
    }

    public func open(_ path: String, headers: [(String, String)] = []) async throws -> WebSocketClient.Outcome {
        try await WebSocketClient.open(port: port, path: path, headers: headers)
    }
}

public struct WaitTimeout: Error, CustomStringConvertible {
    public let what: String
    public init(what: String) { self.what = what }
    public var description: String { "timed out waiting for \(what)" }
}

/// Re-checks `condition` until it holds. For state that offers no event to await (process
/// memory, another process's connection count); each check is cheap and the wait is bounded.
public func waitUntil(
    timeout: Double, _ what: String, every interval: Double = 0.02, _ condition: () async throws -> Bool
) async throws {
    let deadline = Date().addingTimeInterval(patience(timeout))
    while !(try await condition()) {
        guard Date() < deadline else { throw WaitTimeout(what: what) }
        try await Task.sleep(for: .milliseconds(Int64(interval * 1000)))
    }
}
