import Foundation
import NIOConcurrencyHelpers

/// The real `postgres-websockets` executable, started as a child process with settings in
/// its environment. Its log lines are read as they come, so tests can await a line.
public final class ServerProcess: @unchecked Sendable {
    public let process: ChildProcess
    public let lines = EventQueue<String>()
    private let allLines = LineLog()
    public private(set) var port: Int = 0

    /// The executable built next to the running test bundle (or benchmark).
    public static var executablePath: String {
        if let path = ProcessInfo.processInfo.environment["PGWS_EXECUTABLE"] { return path }
        let current = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = current.deletingLastPathComponent()
        // xctest bundles on Linux are executables in the build folder; on Darwin, bundles.
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("postgres-websockets").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
            .appendingPathComponent(".build/debug/postgres-websockets").path
    }

    /// Starts the server with `environment` (PGWS_* settings) and optional arguments, and
    /// waits for its "listening" log line unless `waitForListening` is false.
    public init(
        environment: [String: String], arguments: [String] = [], executable: String = ServerProcess.executablePath,
        waitForListening: Bool = true
    ) async throws {
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PGWS_") }
        env["PGWS_PORT"] = "0"
        env["PGWS_LOG_LEVEL"] = "info"
        // As TestServer: the shared cluster serves every parallel test on two cores, and its
        // answers can lag past the production floor. Tests of the timeout use their own cluster.
        env["PGWS_LISTENER_TIMEOUT"] = "5"
        for (key, value) in environment { env[key] = value }
        var output: [Int32] = [0, 0]
        guard pipe(&output) == 0 else { throw WaitTimeout(what: "a pipe: errno \(errno)") }
        defer { close(output[1]) }  // the child's copy is what keeps the pipe open
        do {
            process = try ChildProcess(executable, arguments, environment: env, output: output[1])
        } catch {
            close(output[0])
            throw error
        }
        process.reapWhenItEnds()
        Self.readLines(of: FileHandle(fileDescriptor: output[0], closeOnDealloc: true), into: lines, allLines)
        Self.killWhenOrphaned(child: process.processIdentifier)
        if waitForListening {
            let line = try await waitForLine(containing: "postgres-websockets listening", timeout: 30)
            // `port=N` in text lines, `"port":"N"` in JSON ones.
            guard let range = line.range(of: "port=") ?? line.range(of: "\"port\":\"") else {
                throw WaitTimeout(what: "port in log line: \(line)")
            }
            port = Int(line[range.upperBound...].prefix(while: \.isNumber)) ?? 0
        }
    }

    deinit {
        if process.isRunning { process.terminate() }
    }

    /// Runs `body` with a started server and always stops it (SIGTERM) afterwards.
    public static func with<T>(
        environment: [String: String], _ body: (ServerProcess) async throws -> T
    ) async throws -> T {
        let server = try await ServerProcess(environment: environment)
        do {
            let result = try await body(server)
            await server.stop()
            return result
        } catch {
            await server.stop()
            // What the server said is the first thing to read when a test of it failed.
            let tail = server.log.split(separator: "\n").suffix(40).joined(separator: "\n")
            FileHandle.standardError.write(Data("server \(server.pid) log, last lines:\n\(tail)\n".utf8))
            throw error
        }
    }

    /// Reads the child's output to its end with blocking reads on a thread of its own. Not a
    /// `readabilityHandler`: tearing down its dispatch read source races libdispatch's epoll
    /// bookkeeping, which crashed a whole test run here in `_dispatch_event_loop_drain`
    /// (swift-corelibs-libdispatch issue 949). A line split across two reads stays one line.
    private static func readLines(of handle: FileHandle, into queue: EventQueue<String>, _ store: LineLog) {
        let reader = Thread {
            var partial = Data()
            while true {
                let data = handle.availableData  // blocks until output or end of file
                if data.isEmpty { break }
                partial.append(data)
                while let newline = partial.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: partial[partial.startIndex..<newline], as: UTF8.self)
                    partial.removeSubrange(partial.startIndex...newline)
                    guard !line.isEmpty else { continue }
                    store.append(line)
                    queue.push(line)
                }
            }
            if !partial.isEmpty {
                let line = String(decoding: partial, as: UTF8.self)
                store.append(line)
                queue.push(line)
            }
        }
        reader.name = "server output"
        reader.start()
    }

    /// A crashed or killed test run must not leave servers behind: a watchdog shell kills the
    /// child once this process is gone (and ends by itself when the child ends first).
    private static func killWhenOrphaned(child: Int32) {
        let script =
            "while kill -0 \(getpid()) 2>/dev/null && kill -0 \(child) 2>/dev/null; do sleep 1; done; kill -KILL \(child) 2>/dev/null"
        (try? ChildProcess("/usr/bin/setsid", ["/bin/sh", "-c", script]))?.reapWhenItEnds()
    }

    public var pid: Int32 { process.processIdentifier }

    /// Waits for a log line containing `text`, consuming the lines before it.
    @discardableResult
    public func waitForLine(containing text: String, timeout: Double = 20) async throws -> String {
        let deadline = Date().addingTimeInterval(patience(timeout))
        while true {
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else { throw WaitTimeout(what: "log line containing '\(text)'; log so far:\n\(log)") }
            guard let line = await lines.nextIfAny(within: remaining) else { continue }
            if line.contains(text) { return line }
        }
    }

    /// Every line logged so far.
    public var log: String { allLines.text }

    public func signal(_ signal: Int32) {
        kill(process.processIdentifier, signal)
    }

    /// Waits for the process to exit and returns its status.
    public func waitForExit(timeout: Double = 20) async throws -> Int32 {
        let process = self.process
        try await waitUntil(timeout: timeout, "process exit") { !process.isRunning }
        return process.terminationStatus
    }

    public func stop() async {
        guard process.isRunning else { return }
        signal(SIGTERM)
        if (try? await waitForExit(timeout: 15)) == nil {
            signal(SIGKILL)
            process.waitUntilExit()
        }
    }

    /// A field of /proc/PID/status in kB (VmRSS, VmHWM).
    public func memoryKB(_ field: String = "VmRSS") -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix(field + ":") {
            return Int(line.split(separator: " ").dropFirst().first ?? "")
        }
        return nil
    }
}

private final class LineLog: Sendable {
    private let lines = NIOLockedValueBox<[String]>([])
    func append(_ line: String) { lines.withLockedValue { $0.append(line) } }
    var text: String { lines.withLockedValue { $0.joined(separator: "\n") } }
}
