import ArgumentParser
import BridgeTestSupport
import Foundation
import NIOCore
import NIOPosix
import PostgresWebSockets
import Synchronization

/// `make soak`: the release server under mixed load for a long time, to see whether its
/// memory or descriptors grow. Not part of CI.
struct SoakCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract:
            "Mixed load for SOAK_MINUTES (default 30): connect/disconnect churn, fan-out, writers, token expiries and a PostgreSQL restart every 5 minutes; prints the server's RSS, descriptors and sockets every minute.",
        discussion: """
            Starts a throwaway PostgreSQL and the release server. Exits 1 if the server died, \
            failed to stop cleanly, or the load stalled.
            """)

    @Option(help: "The server executable (use a release build).")
    var server = ".build/release/postgres-websockets"

    @Option(help: "Minutes to run (default: SOAK_MINUTES, else 30).")
    var minutes: Double? = nil

    @Option(help: "Seconds between PostgreSQL restarts (alternately fast and immediate).")
    var restartEvery: Double = 300

    @Option(help: "Seconds PostgreSQL stays down at each restart.")
    var downFor: Double = 2

    @Option(help: "Seconds between report lines.")
    var reportEvery: Double = 60

    @Option(help: "Reading sockets on the fan-out channel.")
    var readers = 200

    @Option(help: "NOTIFYs per second on the fan-out channel (from SQL).")
    var notifyRate = 50

    @Option(help: "Writer sockets, on 5 channels that 4 more sockets each read.")
    var writers = 20

    @Option(help: "Messages per second of each writer.")
    var writeRate = 5

    @Option(help: "Short-lived sockets opened per second, closed after 1-10 s (half without a close frame).")
    var churn = 20

    @Option(help: "Sockets opened per second with a token that expires 2-6 s later.")
    var expiring = 5

    func validate() throws {
        guard (minutes ?? 1) > 0, restartEvery > downFor, reportEvery > 0 else {
            throw ValidationError("--minutes > 0, --restart-every > --down-for, --report-every > 0")
        }
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        ChildProcesses.shared.stopChildrenOnSignals()
        let environment = ProcessInfo.processInfo.environment
        let minutes = self.minutes ?? environment["SOAK_MINUTES"].flatMap(Double.init) ?? 30
        guard FileManager.default.isExecutableFile(atPath: server) else {
            throw BenchFailure("no server executable at \(server): run `swift build -c release`")
        }
        let cluster = try await TemporaryPostgres.start(tcp: true)
        defer { cluster.stop() }
        let bench = try await BenchServer.start(executable: server, databaseURI: cluster.uri, poolSize: 2)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let load = SoakLoad(
            readers: readers, notifyRate: notifyRate, writers: writers, writeRate: writeRate, churn: churn,
            expiring: expiring, restartEvery: restartEvery, downFor: downFor, reportEvery: reportEvery)
        let soak = Soak(
            options: load, port: bench.port, databaseURI: cluster.uri, group: group,
            start: Clock.monotonic(), seconds: minutes * 60)
        say(
            "pgws-soak: \(Report.grouped(Int(minutes * 60))) s on \(ProcessInfo.processInfo.activeProcessorCount) cores, load \(ProcessStats.loadAverage()); server pid \(bench.pid)"
        )
        say(
            "  \(readers) fan-out readers at \(notifyRate) NOTIFY/s, \(writers) writers at \(writeRate)/s (+\(writers) readers), churn \(churn)/s, expiring \(expiring)/s, PostgreSQL restart every \(Int(restartEvery)) s"
        )
        say(SoakRow.header)
        var failure: (any Error)? = nil
        do {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { await soak.keepReaders() }
                tasks.addTask { try await soak.sendNotifies() }
                tasks.addTask { await soak.write() }
                tasks.addTask { await soak.churn() }
                tasks.addTask { await soak.openExpiring() }
                tasks.addTask { try await soak.restart(cluster) }
                tasks.addTask { try await soak.report(bench) }
                try await tasks.waitForAll()
            }
        } catch {
            failure = error
        }
        let counts = soak.counters.snapshot
        try? await group.shutdownGracefully()
        let complaints = bench.complaints
        let alive = bench.process.process.isRunning
        let status = await bench.stop()
        say("")
        say(soak.table())
        say(soak.summary(counts))
        if !counts.samples.isEmpty { say("client samples: " + counts.samples.prefix(5).joined(separator: " | ")) }
        say("server warnings and errors: \(complaints.count) lines")
        for line in complaints.prefix(12) { say("  " + line) }
        if let failure { throw BenchFailure("soak failed: \(failure)") }
        guard alive, status == 0 else { throw BenchFailure("the server exited \(status) (alive at the end: \(alive))") }
    }
}

/// The load's knobs, as given on the command line.
struct SoakLoad: Sendable {
    var readers: Int
    var notifyRate: Int
    var writers: Int
    var writeRate: Int
    var churn: Int
    var expiring: Int
    var restartEvery: Double
    var downFor: Double
    var reportEvery: Double
}

/// One line of the minute report.
struct SoakRow: Sendable {
    var minute: Double
    var rssKB: Int
    var hwmKB: Int
    var fds: Int
    var sockets: Int
    var threads: Int
    var queued: Int
    var database: String
    var frames: Int
    var opened: Int
    var expired: Int
    var notifies: Int
    var sent: Int

    static let header =
        "minute  RSS MiB  peak MiB   fds  sockets  fds-sockets  threads  db   queued  frames/min  opened/min  expired/min  notifies/min  sent/min"

    var line: String {
        String(
            format: "%6.1f  %7.1f  %8.1f  %4d  %7d  %11d  %7d  ", minute, Double(rssKB) / 1024, Double(hwmKB) / 1024,
            fds, sockets, fds - sockets, threads)
            + database.padding(toLength: 4, withPad: " ", startingAt: 0)
            + String(format: "  %6d  %10d  %10d  %11d  %12d  %8d", queued, frames, opened, expired, notifies, sent)
    }
}

/// The load's state: the parts run as concurrent tasks until `end`.
final class Soak: Sendable {
    let options: SoakLoad
    let port: Int
    let databaseURI: String
    let group: MultiThreadedEventLoopGroup
    let start: Double
    let end: Double
    let counters = SoakCounters()
    private let notifies = Atomic<Int>(0)
    private let restarts = Atomic<Int>(0)
    private let rows = Mutex<[SoakRow]>([])

    init(
        options: SoakLoad, port: Int, databaseURI: String, group: MultiThreadedEventLoopGroup, start: Double,
        seconds: Double
    ) {
        self.options = options
        self.port = port
        self.databaseURI = databaseURI
        self.group = group
        self.start = start
        self.end = start + seconds
    }

    /// The load goes on a little past the last report, so that no row sees it wind down.
    private var running: Bool { Clock.monotonic() < end + 5 }

    private func pause(_ seconds: Double) async {
        try? await Task.sleep(for: .milliseconds(Int64(max(0, min(seconds, end + 5 - Clock.monotonic())) * 1000)))
    }

    private func open(_ path: String) async -> SoakClient? {
        await SoakClient.open(port: port, path: path, counters: counters, group: group)
    }

    /// Opens `count` sockets at once (up to 50 handshakes in flight).
    private func openMany(_ count: Int, _ path: @escaping @Sendable (Int) -> String) async -> [SoakClient] {
        await withTaskGroup(of: SoakClient?.self) { tasks in
            var opened: [SoakClient] = []
            var next = 0
            while next < min(count, 50) {
                let index = next
                tasks.addTask { await self.open(path(index)) }
                next += 1
            }
            while let client = await tasks.next() {
                if let client { opened.append(client) }
                if next < count {
                    let index = next
                    tasks.addTask { await self.open(path(index)) }
                    next += 1
                }
            }
            return opened
        }
    }

    // MARK: - The parts of the load

    /// Fan-out readers, and four readers on each chat channel; lost ones are replaced every 10 s.
    func keepReaders() async {
        var fan: [SoakClient] = []
        var chat: [SoakClient] = []
        while running {
            fan.removeAll { !$0.channel.isActive }
            chat.removeAll { !$0.channel.isActive }
            fan += await openMany(options.readers - fan.count) { _ in
                "/soak-fan/\(TestTokens.mint(mode: "r"))"
            }
            chat += await openMany(4 * min(options.writers, 5) - chat.count) { index in
                "/soak-chat-\(index % 5)/\(TestTokens.mint(mode: "r"))"
            }
            await pause(10)
        }
        (fan + chat).forEach { $0.close() }
    }

    /// NOTIFYs from SQL at `notifyRate`, ten statements a second; reconnects after a restart.
    func sendNotifies() async throws {
        let (uri, rate, end) = (databaseURI, options.notifyRate, end)
        try await onThread("soak-notify") { [self] in
            var session: PGSession? = nil
            var tick = Clock.monotonic()
            let perTick = max(1, rate / 10)
            var sequence = 0
            while Clock.monotonic() < end + 5 {
                tick += 0.1
                Clock.sleep(until: tick)
                do {
                    if session == nil { session = try PGSession(uri: uri) }
                    try session!.exec(
                        "SELECT pg_notify('soak-fan', $1 || g) FROM generate_series(1, $2::int) g",
                        ["n\(sequence)-", String(perTick)])
                    sequence += 1
                    self.notifies.add(perTick, ordering: .relaxed)
                } catch {
                    session = nil
                    tick = Clock.monotonic() + 0.5
                }
            }
        }
    }

    /// Writer sockets on five chat channels; one that was closed is replaced.
    func write() async {
        let count = options.writers
        var sockets: [SoakClient?] = Array(repeating: nil, count: count)
        var tick = Clock.monotonic()
        var sequence = 0
        let perTick = max(1, options.writeRate / 5)
        while running {
            for index in 0..<count where !(sockets[index]?.channel.isActive ?? false) {
                sockets[index] = await open("/soak-chat-\(index % 5)/\(TestTokens.mint(mode: "rw"))")
            }
            for socket in sockets.compactMap({ $0 }) {
                for _ in 0..<perTick {
                    socket.send(text: "chat \(sequence) " + String(repeating: "x", count: 80))
                    sequence += 1
                }
            }
            counters.update { $0.sent += perTick * sockets.compactMap({ $0 }).count }
            tick += 0.2
            await pause(tick - Clock.monotonic())
        }
        sockets.compactMap { $0 }.forEach { $0.close() }
    }

    /// Short-lived sockets on 50 channels (so LISTEN and UNLISTEN churn too); each closes
    /// after 1-10 s, half with a close frame and half by dropping the connection.
    func churn() async {
        var tick = Clock.monotonic()
        var serial = 0
        while running {
            let base = serial
            serial += options.churn
            let opened = await openMany(options.churn) { index in
                "/soak-churn-\((base + index) % 50)/\(TestTokens.mint(mode: index % 3 == 0 ? "rw" : "r"))"
            }
            for (index, client) in opened.enumerated() {
                let graceful = (base + index) % 2 == 0
                client.channel.eventLoop.scheduleTask(in: .milliseconds(Int64.random(in: 1000...10_000))) {
                    if graceful { client.close() } else { client.abort() }
                }
            }
            tick += 1
            await pause(tick - Clock.monotonic())
        }
    }

    /// Sockets whose token expires 2-6 s after it was minted: the server closes them with 3001.
    func openExpiring() async {
        var tick = Clock.monotonic()
        while running {
            let now = Date().timeIntervalSince1970
            _ = await openMany(options.expiring) { _ in
                "/soak-exp/\(TestTokens.mint(mode: "r", exp: (now + Double.random(in: 2...6)).rounded()))"
            }
            tick += 1
            await pause(tick - Clock.monotonic())
        }
    }

    /// Stops PostgreSQL every `restartEvery` seconds (fast, then immediate, ...) for `downFor`.
    func restart(_ cluster: TemporaryPostgres) async throws {
        var number = 0
        while true {
            let at = start + Double(number + 1) * options.restartEvery
            guard at + options.downFor < end else { return }
            await pause(at - Clock.monotonic())
            number += 1
            let mode = number % 2 == 1 ? "fast" : "immediate"
            try await cluster.stopServer(mode: mode)
            try await Task.sleep(for: .milliseconds(Int64(options.downFor * 1000)))
            try await cluster.startServerAgain()
            restarts.add(1, ordering: .relaxed)
            say(String(format: "  %.1f min: PostgreSQL restarted ", (Clock.monotonic() - start) / 60) + "(\(mode))")
        }
    }

    /// One row every `reportEvery` seconds; fails when the server died or nothing moved.
    func report(_ server: BenchServer) async throws {
        var last = counters.snapshot
        var lastNotifies = 0
        var tick = start
        while true {
            tick += options.reportEvery
            guard tick <= end + 0.5 else { return }
            await pause(tick - Clock.monotonic())
            try server.checkAlive("during the soak")
            let health = try? await server.health()
            let counts = counters.snapshot
            let sent = notifies.load(ordering: .relaxed)
            let scale = 60 / options.reportEvery
            let row = SoakRow(
                minute: (Clock.monotonic() - start) / 60, rssKB: server.rssKB ?? -1,
                hwmKB: ProcessStats.status(pid: server.pid, "VmHWM") ?? -1,
                fds: (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.pid)/fd").count) ?? -1,
                sockets: health?.connections ?? -1,
                threads: (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.pid)/task").count) ?? -1,
                queued: health?.queued ?? -1, database: health?.status ?? "?",
                frames: Int(Double(counts.frames - last.frames) * scale),
                opened: Int(Double(counts.opened - last.opened) * scale),
                expired: Int(Double(counts.expired - last.expired) * scale),
                notifies: Int(Double(sent - lastNotifies) * scale), sent: Int(Double(counts.sent - last.sent) * scale))
            rows.withLock { $0.append(row) }
            say(row.line)
            if counts.frames == last.frames { throw BenchFailure("no frame arrived for \(options.reportEvery) s") }
            last = counts
            lastNotifies = sent
        }
    }

    // MARK: - The result

    func table() -> String {
        let rows = rows.withLock { $0 }
        var lines = [
            "| minute | RSS MiB | fds | open sockets | fds - sockets | frames/min | sockets opened/min |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in rows {
            lines.append(
                String(
                    format: "| %.0f | %.1f | %d | %d | %d | ", row.minute, Double(row.rssKB) / 1024, row.fds,
                    row.sockets, row.fds - row.sockets)
                    + "\(Report.grouped(row.frames)) | \(Report.grouped(row.opened)) |")
        }
        return lines.joined(separator: "\n")
    }

    /// RSS and descriptors after warm-up (from the 5th report on, or the second half of a
    /// short run), and what the clients saw.
    func summary(_ counts: SoakCounts) -> String {
        let rows = rows.withLock { $0 }
        var text =
            "clients: \(Report.grouped(counts.opened)) sockets opened, \(Report.grouped(counts.frames)) frames received, \(Report.grouped(counts.sent)) messages sent, \(counts.expired) closed at exp (3001), \(counts.closedOtherwise) closed otherwise by the server, \(counts.dropped) dropped without a close frame, \(counts.refused) handshakes refused or failed; \(restarts.load(ordering: .relaxed)) PostgreSQL restarts"
        let warm = rows.count >= 8 ? Array(rows.dropFirst(4)) : Array(rows.dropFirst(rows.count / 2))
        if let first = warm.first, let last = warm.last {
            let rss = warm.map(\.rssKB)
            let other = warm.map { $0.fds - $0.sockets }
            text += String(
                format:
                    "\nafter warm-up (minute %.0f to %.0f): RSS %.1f -> %.1f MiB (min %.1f, max %.1f); fds - sockets %d -> %d (min %d, max %d)",
                first.minute, last.minute, Double(first.rssKB) / 1024, Double(last.rssKB) / 1024,
                Double(rss.min()!) / 1024, Double(rss.max()!) / 1024, other.first!, other.last!, other.min()!,
                other.max()!)
        }
        return text
    }
}
