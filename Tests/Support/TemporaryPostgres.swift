import CLinuxShims
import Foundation

/// A throwaway PostgreSQL cluster in a temporary folder, on a free port.
///
/// As root, initdb and pg_ctl run as the `postgres` user (initdb refuses root). A watchdog
/// shell stops the cluster and deletes its folder when the process that started it exits,
/// however it exits, so a crashed test run leaves nothing behind.
public final class TemporaryPostgres: @unchecked Sendable {
    public let port: Int
    public let directory: String
    private let binDirectory: String
    private let lock = NSLock()
    private var stopped = false

    /// Whether the cluster listens on 127.0.0.1 (else only on a Unix socket in its folder).
    public let tcp: Bool

    public var uri: String { uri(database: "postgres") }

    /// Test clusters listen on a Unix socket in their own folder: no port can be taken by
    /// another cluster while one is stopped for a restart test.
    public func uri(database: String) -> String {
        tcp
            ? "postgresql://postgres@127.0.0.1:\(port)/\(database)"
            : "postgresql://postgres@/\(database)?host=\(directory)&port=\(port)"
    }

    /// The URI of the shared cluster of this test process (`PGWS_TEST_DB_URI` when set). It is
    /// started once, off Swift's cooperative threads, and lives as long as the process; the
    /// watchdog removes it after the process exits.
    public static func sharedURI() async -> String {
        await shared.value.uri
    }

    private static let shared = Task<(uri: String, cluster: TemporaryPostgres?), Never> {
        if let uri = ProcessInfo.processInfo.environment["PGWS_TEST_DB_URI"], !uri.isEmpty { return (uri, nil) }
        do {
            let cluster = try await TemporaryPostgres.start()
            return (cluster.uri, cluster)
        } catch {
            fatalError("cannot start a throwaway PostgreSQL: \(error)")
        }
    }

    private let extraOptions: [String]

    private init(port: Int, directory: String, binDirectory: String, extraOptions: [String], tcp: Bool) {
        self.port = port
        self.tcp = tcp
        self.directory = directory
        self.binDirectory = binDirectory
        self.extraOptions = extraOptions
    }

    deinit {
        stopBlocking()
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Starts a cluster; `settings` are extra `name=value` server settings. initdb and
    /// pg_ctl run on a Dispatch thread: blocking Swift's few cooperative threads for seconds
    /// would stall every other test's timers.
    public static func start(settings: [String] = [], tcp: Bool = false) async throws -> TemporaryPostgres {
        try await offloaded { try startBlocking(settings: settings, tcp: tcp) }
    }

    static func startBlocking(settings: [String] = [], tcp: Bool = false) throws -> TemporaryPostgres {
        let bin = try findBinDirectory()
        let directory = try makeTemporaryDirectory()
        let dataDirectory = directory + "/data"
        try run(
            bin + "/initdb",
            ["-D", dataDirectory, "--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"],
            asPostgres: true)
        startWatchdog(directory: directory, bin: bin)
        var lastError: (any Error)? = nil
        for _ in 0..<5 {
            let port = tcp ? try freePort() : 5432
            let cluster = TemporaryPostgres(
                port: port, directory: directory, binDirectory: bin, extraOptions: settings, tcp: tcp)
            do {
                try cluster.startServer()
                return cluster
            } catch {
                lastError = error
                cluster.stopped = true  // nothing to stop; try another port
            }
        }
        throw lastError ?? Failure(description: "could not start PostgreSQL")
    }

    private var dataDirectory: String { directory + "/data" }

    /// The server's log so far.
    public var serverLog: String {
        (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? ""
    }

    private func startServer() throws {
        let options =
            ([
                "-p \(port)", "-k \(directory)", "-c listen_addresses=\(tcp ? "127.0.0.1" : "''")", "-c fsync=off",
                "-c synchronous_commit=off", "-c full_page_writes=off", "-c max_connections=300",
                "-c shared_buffers=32MB",
            ] + extraOptions.map { "-c \($0)" }).joined(separator: " ")
        try Self.run(
            binDirectory + "/pg_ctl",
            ["-D", dataDirectory, "-l", directory + "/server.log", "-w", "-t", "60", "-o", options, "start"],
            asPostgres: true)
    }

    /// Stops the server (mode: smart, fast or immediate). The data folder stays for `restart`.
    public func stopServer(mode: String = "fast") async throws {
        _ = try await Self.offloaded {
            try Self.run(
                self.binDirectory + "/pg_ctl", ["-D", self.dataDirectory, "-m", mode, "-w", "stop"], asPostgres: true)
        }
    }

    public func startServerAgain() async throws {
        try await Self.offloaded { try self.startServer() }
    }

    /// Stops the cluster and deletes its folder, in the background: callable from `defer`.
    public func stop() {
        Self.blockingWork.async { self.stopBlocking() }
    }

    /// A queue of its own: its threads are made on demand. The global queue's few threads
    /// are shared with Swift concurrency here, and blocking them stalls every test's timers.
    private static let blockingWork = DispatchQueue(label: "temporary-postgres", attributes: .concurrent)

    private static func offloaded<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            blockingWork.async { continuation.resume(with: Result { try body() }) }
        }
    }

    private func stopBlocking() {
        lock.lock()
        defer { lock.unlock() }
        guard !stopped else { return }
        stopped = true
        _ = try? Self.run(
            binDirectory + "/pg_ctl", ["-D", dataDirectory, "-m", "immediate", "-w", "stop"], asPostgres: true)
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: - Helpers

    private static var isRoot: Bool { geteuid() == 0 }

    static func findBinDirectory() throws -> String {
        let fm = FileManager.default
        if let versions = try? fm.contentsOfDirectory(atPath: "/usr/lib/postgresql") {
            let sorted = versions.compactMap(Int.init).sorted(by: >)
            for version in sorted where fm.isExecutableFile(atPath: "/usr/lib/postgresql/\(version)/bin/initdb") {
                return "/usr/lib/postgresql/\(version)/bin"
            }
        }
        for candidate in ["/usr/local/pgsql/bin", "/usr/bin", "/opt/homebrew/bin", "/usr/local/bin"]
        where fm.isExecutableFile(atPath: candidate + "/initdb") && fm.isExecutableFile(atPath: candidate + "/pg_ctl") {
            return candidate
        }
        throw Failure(
            description: "PostgreSQL server binaries (initdb, pg_ctl) not found; install the postgresql package")
    }

    private static func makeTemporaryDirectory() throws -> String {
        var template = Array("/tmp/pgws-test-XXXXXX".utf8CString)
        guard let pointer = mkdtemp(&template) else { throw Failure(description: "mkdtemp failed") }
        let path = String(cString: UnsafePointer(pointer))
        if isRoot {
            try run("/bin/chown", ["postgres:postgres", path], asPostgres: false)
        }
        return path
    }

    /// Stops the cluster and removes its folder once this process is gone.
    private static func startWatchdog(directory: String, bin: String) {
        let stop =
            isRoot
            ? "runuser -u postgres -- \(bin)/pg_ctl -D \(directory)/data -m immediate -w stop"
            : "\(bin)/pg_ctl -D \(directory)/data -m immediate -w stop"
        let script =
            "while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done; \(stop) >/dev/null 2>&1; rm -rf \(directory)"
        (try? ChildProcess("/usr/bin/setsid", ["/bin/sh", "-c", script]))?.reapWhenItEnds()
    }

    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw Failure(description: "bind failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Runs a command to completion with posix_spawn (Foundation's Process can miss the exit
    /// of pg_ctl, whose postmaster child outlives it). Output goes to a file, not a pipe, so
    /// no daemonized grandchild can hold the reader open; no other descriptor is inherited.
    @discardableResult
    static func run(_ executable: String, _ arguments: [String], asPostgres: Bool) throws -> String {
        let argv =
            (asPostgres && isRoot)
            ? ["/usr/sbin/runuser", "-u", "postgres", "--", executable] + arguments : [executable] + arguments
        var template = Array("/tmp/pgws-cmd-XXXXXX".utf8CString)
        let outputFD = mkstemp(&template)
        guard outputFD >= 0 else { throw Failure(description: "mkstemp failed") }
        // Unlinked at once: nothing stays behind when the process exits mid-command.
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        defer { close(outputFD) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outputFD, 1)
        posix_spawn_file_actions_adddup2(&actions, outputFD, 2)
        // Nothing else of this process may reach the child: pg_ctl's postmaster would hold
        // the sockets of tests running in parallel open for its whole life (NIO does not
        // create them close-on-exec), so their peers would never see them close.
        pgws_spawn_close_from(&actions, 3)
        let cArguments = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, cArguments, environ)
        guard spawned == 0 else { throw Failure(description: "cannot run \(argv[0]): error \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        lseek(outputFD, 0, SEEK_SET)
        let output = FileHandle(fileDescriptor: outputFD, closeOnDealloc: false).readDataToEndOfFile()
        let text = String(decoding: output, as: UTF8.self)
        let exited = status & 0x7f == 0
        let code = (status >> 8) & 0xff
        guard exited && code == 0 else {
            throw Failure(description: "\(argv.joined(separator: " ")) failed (status \(status)): \(text)")
        }
        return text
    }
}
