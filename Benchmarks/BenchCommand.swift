import ArgumentParser
import BridgeTestSupport
import Foundation

@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pgws-bench",
        abstract:
            "Benchmarks postgres-websockets: fan-out (and its raw write(2) floor), ingest, connections, many channels, and PostgreSQL's own baseline.",
        subcommands: [RunCommand.self, SoakCommand.self, WorkerCommandLine.self],
        defaultSubcommand: RunCommand.self)
}

/// The scenarios, in the order they run.
enum Scenario: String, CaseIterable, ExpressibleByArgument, Sendable {
    case fanout, floor, burst, v1, durable, baseline, ingest, connections, channels, presence

    init?(argument: String) {
        switch argument {
        case "many-channels", "manychannels", "many": self = .channels
        default: self.init(rawValue: argument)
        }
    }
}

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Runs the scenarios and writes the table and bench-results.json (the default command).",
        discussion: """
            Starts a throwaway PostgreSQL (or uses PGWS_BENCH_DB_URI) and a fresh release server for every \
            scenario. Exits 1 if any scenario lost, duplicated or reordered a message, or the server failed.
            """)

    @Option(help: "The server executable (use a release build).")
    var server = ".build/release/postgres-websockets"

    @Option(
        help:
            "Comma-separated scenarios: fanout,floor,burst,v1,durable,baseline,ingest,connections,channels,presence (default: all)."
    )
    var only: String? = nil

    @Flag(help: "Small sizes, for a smoke run in well under a minute.")
    var quick = false

    @Option(help: "Where to write the figures as JSON.")
    var json = "bench-results.json"

    @Option(help: "The server's PGWS_POOL_SIZE.")
    var poolSize = 2

    @Option(
        name: .customLong("server-env"),
        help: "Extra KEY=VALUE for the server's environment (repeatable; for experiments).")
    var serverEnvironment: [String] = []

    @Option(help: "fanout: sockets on the one channel (default 5000; up to 19000).")
    var sockets: Int? = nil

    @Option(help: "fanout/floor: sockets of the latency row at --rate.")
    var latencySockets: Int? = nil

    @Option(help: "fanout/floor/baseline: NOTIFYs per second of the fixed-rate streams.")
    var rate: Double = 100

    @Option(help: "fanout/floor/baseline: seconds each fixed-rate stream lasts.")
    var duration: Double? = nil

    @Option(help: "fanout/baseline: NOTIFYs of each as-fast-as-possible stream.")
    var burst: Int? = nil

    @Option(help: "fanout/baseline: NOTIFYs per statement in those streams.")
    var batch = 100

    @Option(help: "fanout/baseline: payload sizes in bytes, comma-separated (each < 8000).")
    var payloads = "64,1024"

    @Option(help: "burst: sockets on the channel (progressing, slow and one stalled).")
    var burstSockets: Int? = nil

    @Option(help: "burst: sockets that read at --burst-rate.")
    var burstSlow: Int? = nil

    @Option(help: "burst: bytes per second each slow socket reads.")
    var burstRate = 1 << 20

    @Option(help: "burst: NOTIFYs of 1 KB in the one transaction.")
    var burstCount: Int? = nil

    @Option(help: "v1: sockets that reconnect and resume.")
    var resumeSockets: Int? = nil

    @Option(help: "v1: messages each resuming socket missed.")
    var resumeMissed: Int? = nil

    @Option(help: "durable: messages each publishing connection sends, one per transaction.")
    var durablePublishes: Int? = nil

    @Option(help: "durable: retained messages replayed to one pgws.v1 client.")
    var durableReplay: Int? = nil

    @Option(help: "ingest: writer sockets.")
    var writers: Int? = nil

    @Option(help: "ingest: messages each writer sends.")
    var messages: Int? = nil

    @Option(help: "ingest: bytes of each client message (before the server's envelope).")
    var messageSize = 64

    @Option(help: "ingest: 'one' channel for all writers or 'each' writer its own.")
    var ingestChannels = "one"

    @Option(
        help:
            "ingest: the second run's bound on each writer's messages not yet seen by the listener (0: no second run).")
    var ingestWindow = 100

    @Option(help: "ingest: one-notify-per-transaction statements of the PostgreSQL baseline.")
    var baselineNotifies: Int? = nil

    @Option(help: "connections: idle sockets to open.")
    var idleSockets: Int? = nil

    @Option(help: "channels: sockets, each on its own channel.")
    var channels: Int? = nil

    @Option(help: "Sockets per worker process at most (a process may hold 20,000 files).")
    var socketsPerWorker = 9000

    @Option(help: "Event-loop threads of each load-generating process (1 or 2).")
    var clientThreads = 2

    @Option(help: "Handshakes in flight at once, per worker process.")
    var handshakeConcurrency = 200

    @Option(help: "Give up waiting for a stream when nothing arrived for this many seconds.")
    var stallTimeout: Double = 20

    func validate() throws {
        let sizes = payloads.split(separator: ",").compactMap { Int($0) }
        guard !sizes.isEmpty, sizes.allSatisfy({ $0 >= 48 && $0 < 8000 }) else {
            throw ValidationError("--payloads: sizes from 48 to 7999 bytes")
        }
        guard ["one", "each"].contains(ingestChannels) else { throw ValidationError("--ingest-channels: one or each") }
        guard (1...2).contains(clientThreads) else { throw ValidationError("--client-threads: 1 or 2") }
        guard socketsPerWorker >= 1 && socketsPerWorker <= 9500 else {
            throw ValidationError("--sockets-per-worker: 1...9500")
        }
        guard ingestWindow >= 0 else { throw ValidationError("--ingest-window: 0 or more") }
        guard messageSize >= 40 && messageSize < 7000 else { throw ValidationError("--message-size: 40...6999") }
        if let only { _ = try selectedScenarios(only) }
        for entry in serverEnvironment where !entry.contains("=") {
            throw ValidationError("--server-env: KEY=VALUE, not '\(entry)'")
        }
    }

    private func selectedScenarios(_ list: String) throws -> [Scenario] {
        let names = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        var chosen: [Scenario] = []
        for name in names {
            guard let scenario = Scenario(argument: name) else {
                throw ValidationError(
                    "--only: unknown scenario '\(name)' (fanout, floor, burst, v1, durable, baseline, ingest, connections, channels, presence)"
                )
            }
            chosen.append(scenario)
        }
        return Scenario.allCases.filter(chosen.contains)
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        ChildProcesses.shared.stopChildrenOnSignals()
        let sizes = BenchSizes(
            quick: quick, poolSize: poolSize,
            sockets: sockets ?? (quick ? 300 : 5000),
            latencySockets: latencySockets ?? (quick ? 100 : 1000),
            rate: rate, duration: duration ?? (quick ? 1 : 5), burst: burst ?? (quick ? 200 : 1000), batch: batch,
            burstSockets: burstSockets ?? (quick ? 100 : 1000), burstSlow: burstSlow ?? (quick ? 5 : 50),
            burstRate: burstRate, burstCount: burstCount ?? (quick ? 2000 : 20_000),
            resumeSockets: resumeSockets ?? (quick ? 100 : 1000), resumeMissed: resumeMissed ?? (quick ? 100 : 1000),
            durablePublishes: durablePublishes ?? (quick ? 200 : 2000),
            durableReplay: durableReplay ?? (quick ? 10_000 : 100_000),
            payloads: payloads.split(separator: ",").compactMap { Int($0) },
            writers: writers ?? (quick ? 10 : 50), messages: messages ?? (quick ? 300 : 2000), messageSize: messageSize,
            ingestChannelEach: ingestChannels == "each", ingestWindow: ingestWindow,
            baselineNotifies: baselineNotifies ?? (quick ? 1000 : 5000),
            idleSockets: idleSockets ?? (quick ? 500 : 10_000), channels: channels ?? (quick ? 500 : 10_000),
            socketsPerWorker: socketsPerWorker, clientThreads: clientThreads,
            handshakeConcurrency: handshakeConcurrency, stallSeconds: stallTimeout)
        let scenarios = try only.map(selectedScenarios) ?? Scenario.allCases
        guard FileManager.default.isExecutableFile(atPath: server) else {
            throw BenchFailure(
                "no server executable at \(server): run `swift build -c release --product postgres-websockets`")
        }

        let loadBefore = ProcessStats.loadAverage()
        var cluster: TemporaryPostgres? = nil
        let databaseURI: String
        if let uri = ProcessInfo.processInfo.environment["PGWS_BENCH_DB_URI"], !uri.isEmpty {
            databaseURI = uri
        } else {
            cluster = try await TemporaryPostgres.start(tcp: true)
            databaseURI = cluster!.uri
        }
        var extra: [String: String] = [:]
        for entry in serverEnvironment {
            let parts = entry.split(separator: "=", maxSplits: 1)
            extra[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        let context = BenchContext(
            sizes: sizes, databaseURI: databaseURI, serverExecutable: server, serverEnvironment: extra,
            selfExecutable: Self.selfExecutable())
        say(
            "pgws-bench: \(scenarios.map(\.rawValue).joined(separator: ", ")) on \(ProcessInfo.processInfo.activeProcessorCount) cores, load \(loadBefore)\(quick ? " (quick)" : "")"
        )
        let started = Clock.monotonic()
        for scenario in scenarios {
            say("== \(scenario.rawValue)")
            do {
                try await context.run(scenario)
            } catch {
                context.report.fail(scenario.rawValue, "\(error)")
            }
        }
        cluster?.stop()

        let report = context.report
        say("")
        say(report.table())
        var machine = [
            "cores": String(ProcessInfo.processInfo.activeProcessorCount),
            "memory_gb": String(ProcessInfo.processInfo.physicalMemory >> 30),
            "load_before": loadBefore, "load_after": ProcessStats.loadAverage(),
            "seconds": String(format: "%.1f", Clock.monotonic() - started),
            "postgresql": context.postgresVersion ?? "?",
        ]
        if let host = ProcessInfo.processInfo.environment["HOSTNAME"] { machine["host"] = host }
        var options = sizes.dictionary
        options["server_env"] = serverEnvironment.joined(separator: " ")
        try report.write(to: json, machine: machine, options: options)
        say("\nwrote \(json)")
        if !report.failures.isEmpty {
            throw ExitCode(1)
        }
    }

    static func selfExecutable() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}

/// The sizes of one run, after --quick and the options.
struct BenchSizes: Sendable {
    var quick: Bool
    var poolSize: Int
    var sockets: Int
    var latencySockets: Int
    var rate: Double
    var duration: Double
    var burst: Int
    var batch: Int
    var burstSockets: Int
    var burstSlow: Int
    var burstRate: Int
    var burstCount: Int
    var resumeSockets: Int
    var resumeMissed: Int
    var durablePublishes: Int
    var durableReplay: Int
    var payloads: [Int]
    var writers: Int
    var messages: Int
    var messageSize: Int
    var ingestChannelEach: Bool
    var ingestWindow: Int
    var baselineNotifies: Int
    var idleSockets: Int
    var channels: Int
    var socketsPerWorker: Int
    var clientThreads: Int
    var handshakeConcurrency: Int
    var stallSeconds: Double

    var rateCount: Int { max(1, Int((rate * duration).rounded())) }

    var dictionary: [String: String] {
        [
            "quick": String(quick), "pool_size": String(poolSize), "sockets": String(sockets),
            "latency_sockets": String(latencySockets), "rate": String(rate), "duration": String(duration),
            "burst": String(burst), "batch": String(batch),
            "burst_sockets": String(burstSockets), "burst_slow": String(burstSlow), "burst_rate": String(burstRate),
            "burst_count": String(burstCount), "resume_sockets": String(resumeSockets),
            "resume_missed": String(resumeMissed), "durable_publishes": String(durablePublishes),
            "durable_replay": String(durableReplay),
            "payloads": payloads.map(String.init).joined(separator: ","),
            "writers": String(writers), "messages": String(messages), "message_size": String(messageSize),
            "ingest_channels": ingestChannelEach ? "each" : "one", "ingest_window": String(ingestWindow),
            "baseline_notifies": String(baselineNotifies),
            "idle_sockets": String(idleSockets), "channels": String(channels),
            "sockets_per_worker": String(socketsPerWorker), "client_threads": String(clientThreads),
            "handshake_concurrency": String(handshakeConcurrency), "stall_timeout": String(stallSeconds),
        ]
    }
}
