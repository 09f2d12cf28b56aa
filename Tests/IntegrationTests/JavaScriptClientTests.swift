import BridgeTestSupport
import Foundation
import PostgresWebSockets
import Testing

/// The JavaScript client (`clients/js/pgws.js`) against the real server and the real
/// PostgreSQL: its scripts (`clients/js/test/`) run as child processes, Node with
/// `--experimental-websocket` and headless Chromium through Playwright (Python), with the
/// server's URL and tokens minted here as arguments; each prints one JSON line with its
/// checks and exits 0 when they hold. `make test` installs node, chromium and playwright
/// (scripts/install-deps).
///
/// Serialized: Chromium and the timed token refresh share two cores with the rest of the
/// suite, and one browser at a time is plenty.
@Suite(.serialized) struct JavaScriptClientTests {
    /// The package root, from this file's place in it.
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let clientDirectory = packageRoot.appendingPathComponent("clients/js")

    /// The demo's server-root is client-example/, which cannot reach clients/js/ (no path,
    /// symlink included, leaves server-root): it serves a copy, which must be the client.
    @Test func demoServesTheCurrentClient() throws {
        let client = try Data(contentsOf: Self.clientDirectory.appendingPathComponent("pgws.js"))
        let copy = try Data(contentsOf: Self.packageRoot.appendingPathComponent("client-example/pgws.js"))
        #expect(copy == client, "client-example/pgws.js differs: cp clients/js/pgws.js client-example/pgws.js")
    }

    /// The client's own rules (close codes, refs, since, refresh) against a scripted
    /// WebSocket server in the Node process: no bridge involved.
    @Test func clientRulesAgainstScriptedServer() async throws {
        let result = try await ChildProcess.runJSON(
            ["node", "--experimental-websocket", "test/unit.mjs"], in: Self.clientDirectory, timeout: 120)
        #expect(result.ok, "\(result)")
    }

    /// Node: subscribe, publish (resolved by `published`, `forbidden` for a read-only token),
    /// and a resume across a TCP connection cut while another client keeps publishing.
    @Test func nodeClientAgainstServer() async throws {
        try await TestServer.with { server in
            let result = try await ChildProcess.runJSON(
                [
                    "node", "--experimental-websocket", "test/node-client.mjs",
                    "--url", "ws://127.0.0.1:\(server.port)/",
                    "--channel", uniqueChannel("js-node"),
                    "--rw", TestTokens.mint(mode: "rw"),
                    "--r", TestTokens.mint(mode: "r"),
                    "--count", "200", "--scale", "\(patience(1))",
                ], in: Self.clientDirectory, timeout: 120)
            #expect(result.ok, "\(result)")
            #expect(result.checks["recovered: true"] == .bool(true))
        }
    }

    /// Headless Chromium, the page served by the server itself: server-root is clients/js,
    /// so the page (test/browser.html) and the module it imports (../pgws.js) are both inside
    /// it. Resume after the socket is closed under the client, and a token refresh: the first
    /// token expires a few seconds after start and the socket stays open past it.
    @Test func browserClientAgainstServer() async throws {
        try await TestServer.with({ $0.server.rootPath = Self.clientDirectory.path }) { server in
            let now = Date().timeIntervalSince1970.rounded(.down)
            let result = try await ChildProcess.runJSON(
                [
                    "python3", "test/browser.py",
                    "--url", "http://127.0.0.1:\(server.port)/test/browser.html",
                    "--channel", uniqueChannel("js-browser"),
                    "--rw", TestTokens.mint(mode: "rw"),
                    "--short", TestTokens.mint(mode: "r", exp: now + patience(15)),
                    "--fresh", TestTokens.mint(mode: "r", exp: now + 3600),
                    "--timeout", "\(patience(90))", "--scale", "\(patience(1))",
                ], in: Self.clientDirectory, timeout: 150)
            #expect(result.ok, "\(result)")
            #expect(server.log.records(with: [.closeCode: "3001"]).isEmpty, "a socket was closed at its token's exp")
        }
    }

    /// The demo page on the client, served as `make run` serves it (client-example/ with the
    /// audit and meta channels of sample.conf), driven in Chromium as a person would.
    @Test func demoPageInBrowser() async throws {
        let root = Self.packageRoot.appendingPathComponent("client-example").path
        try await TestServer.with({
            $0.server.rootPath = root
            $0.channels.auditChannel = "audit"
            $0.channels.metaChannel = "server-info"
            $0.presence.isEnabled = true
            $0.presence.fields = ["name"]
        }) { server in
            let result = try await ChildProcess.runJSON(
                [
                    "python3", "test/demo.py", "--url", "http://127.0.0.1:\(server.port)/",
                    "--channel", uniqueChannel("demo"), "--scale", "\(patience(1))",
                ], in: Self.clientDirectory, timeout: 150)
            #expect(result.ok, "\(result)")
        }
    }
}

/// A child process bounded by coreutils' `timeout` (killed 5 s after it, whatever this
/// process does meanwhile), its output in temporary files: nothing to drain concurrently.
enum ChildProcess {
    struct Output: Sendable {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// The last line of a script's stdout, a JSON object with `ok`.
    struct Result: Sendable, CustomStringConvertible {
        let ok: Bool
        let checks: [String: JSONValue]
        let output: Output

        var description: String {
            "exit \(output.status)\nstdout:\n\(output.stdout.suffix(4000))\nstderr:\n\(output.stderr.suffix(4000))"
        }
    }

    static func runJSON(_ command: [String], in directory: URL, timeout: Double) async throws -> Result {
        let output = try await run(command, in: directory, timeout: patience(timeout))
        let line = output.stdout.split(separator: "\n").last { $0.hasPrefix("{") }.map(String.init) ?? ""
        var checks: [String: JSONValue] = [:]
        var ok = false
        if let parsed = try? JSONParser.parse(line) {
            ok = parsed["ok"] == .bool(true) && output.status == 0
            if case .object(let members) = parsed["checks"] ?? .null {
                for (key, value) in members { checks[key] = value }
            }
        }
        return Result(ok: ok, checks: checks, output: output)
    }

    static func run(_ command: [String], in directory: URL, timeout: Double) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            work.async {
                continuation.resume(with: Swift.Result { try runBlocking(command, in: directory, timeout: timeout) })
            }
        }
    }

    /// Its own queue: blocking the global queue's few threads would stall the other tests.
    private static let work = DispatchQueue(label: "child-process", attributes: .concurrent)

    private static func runBlocking(_ command: [String], in directory: URL, timeout: Double) throws -> Output {
        let files = FileManager.default.temporaryDirectory.appendingPathComponent("pgws-child-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: files, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: files) }
        let stdoutURL = files.appendingPathComponent("stdout")
        let stderrURL = files.appendingPathComponent("stderr")
        guard FileManager.default.createFile(atPath: stdoutURL.path, contents: nil),
            FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
        else { throw CocoaError(.fileWriteUnknown) }
        let stdout = try FileHandle(forWritingTo: stdoutURL)
        let stderr = try FileHandle(forWritingTo: stderrURL)
        defer {
            try? stdout.close()
            try? stderr.close()
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = ["-k", "5", String(Int(timeout.rounded(.up)))] + command
        process.currentDirectoryURL = directory
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus,
            stdout: (try? String(contentsOf: stdoutURL, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "")
    }
}
