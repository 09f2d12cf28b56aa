import BridgeTestSupport
import Foundation
import PostgresWebSockets

/// The release server under test, a child process on 127.0.0.1 and a kernel-chosen port.
/// Every scenario gets a fresh one, so CPU and memory figures start from a known state.
final class BenchServer: Sendable {
    let process: ServerProcess
    let port: Int
    let pid: Int32

    static func start(
        executable: String, databaseURI: String, poolSize: Int, extra: [String: String] = [:]
    ) async throws -> BenchServer {
        var environment = [
            "PGWS_DB_URI": databaseURI,
            "PGWS_JWT_SECRET": TestTokens.secret,
            "PGWS_HOST": "127.0.0.1",
            "PGWS_PORT": "0",
            "PGWS_MAX_CONNECTIONS": "25000",
            "PGWS_LOG_LEVEL": "notice",
            "PGWS_POOL_SIZE": String(poolSize),
        ]
        environment.merge(extra) { $1 }
        let process = try await ServerProcess(environment: environment, executable: executable)
        ChildProcesses.shared.add(process.pid)
        let server = BenchServer(process: process)
        try await server.waitUntilHealthy()
        return server
    }

    private init(process: ServerProcess) {
        self.process = process
        port = process.port
        pid = process.pid
    }

    var cpuSeconds: Double? { ProcessStats.cpuSeconds(pid: pid) }
    var rssKB: Int? { ProcessStats.status(pid: pid, "VmRSS") }

    /// Throws with the end of the server's log if it is no longer running.
    func checkAlive(_ when: String) throws {
        guard process.process.isRunning else {
            let tail = process.log.split(separator: "\n").suffix(20).joined(separator: "\n")
            throw BenchFailure(
                "the server exited \(when) (status \(process.process.terminationStatus), reason \(process.process.terminationReason.rawValue)); log:\n\(tail)"
            )
        }
    }

    /// Lines the server logged at warning or worse (it runs at notice).
    var complaints: [String] {
        process.log.split(separator: "\n").map(String.init).filter { line in
            ["warning", "error", "critical", "fatal", "Fatal error"].contains { line.contains($0) }
        }
    }

    struct Health: Sendable {
        var status: String
        var connections: Int
        var listening: Int
        var queued: Int
    }

    /// GET /health on a plain blocking socket.
    func health() async throws -> Health {
        let port = self.port
        let body = try await onThread("bench-health") {
            try HTTPGet.body(host: "127.0.0.1", port: port, path: "/health")
        }
        let json: JSONValue
        do {
            json = try JSONParser.parse(body)
        } catch {
            throw BenchFailure("GET /health answered '\(body.prefix(200))'")
        }
        func number(_ key: String) -> Int { Int(json[key]?.doubleValue ?? -1) }
        return Health(
            status: json["status"]?.stringValue ?? "?", connections: number("connections"),
            listening: number("listening"), queued: number("queued"))
    }

    private func waitUntilHealthy() async throws {
        let deadline = Clock.monotonic() + 30
        while Clock.monotonic() < deadline {
            if let health = try? await health(), health.status == "ok" { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw BenchFailure("the server did not report healthy within 30 s")
    }

    /// Polls /health until `condition` holds; returns the wall clock (µs) when it did.
    func waitForHealth(timeout: Double, interval: Double = 0.01, _ condition: (Health) -> Bool) async throws -> (
        Int64, Health
    ) {
        let deadline = Clock.monotonic() + timeout
        var last: Health? = nil
        while Clock.monotonic() < deadline {
            let health = try await health()
            if condition(health) { return (Clock.wallMicros(), health) }
            last = health
            try await Task.sleep(for: .milliseconds(Int64(interval * 1000)))
        }
        throw BenchFailure(
            "the server's /health did not reach the expected state within \(Int(timeout)) s; last: \(String(describing: last))"
        )
    }

    /// SIGTERM, then the exit status (SIGKILL after 15 s).
    func stop() async -> Int32 {
        await process.stop()
        ChildProcesses.shared.remove(pid)
        return process.process.terminationStatus
    }
}

/// A one-line failure of the benchmark: printed, recorded in the JSON, exit status 1.
struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The smallest HTTP/1.1 client: one GET, read until the server closes.
enum HTTPGet {
    static func body(host: String, port: Int, path: String) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchFailure("socket() failed: \(errno)") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr(host)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            throw BenchFailure("cannot connect to \(host):\(port) for \(path): errno \(errno)")
        }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n\r\n".utf8)
        guard write(fd, request, request.count) == request.count else { throw BenchFailure("write failed for \(path)") }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            response += chunk[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else {
            throw BenchFailure("no HTTP response for \(path): '\(text.prefix(100))'")
        }
        return String(text[split.upperBound...])
    }
}
