import BridgeTestSupport
import Foundation

/// What the scenarios share: sizes, the database, the executables, the report, and the
/// fan-out latencies that the baseline compares against.
final class BenchContext {
    let sizes: BenchSizes
    let databaseURI: String
    let serverExecutable: String
    let serverEnvironment: [String: String]
    let selfExecutable: String
    let report = Report()
    /// Channel names carry a per-run tag, so runs on a shared database never mix.
    let runTag: String
    private var phaseCounter = 0
    private(set) var postgresVersion: String? = nil
    /// p50/p99 (µs) of fan-out streams, by `streamKey`, and of the latency row (`latencyRowKey`:
    /// to each socket, `lastSocketRowKey`: to the last socket), for the baseline's overhead
    /// rows and the floor's comparison.
    var fanoutLatency: [String: (label: String, p50: Double, p99: Double)] = [:]

    init(
        sizes: BenchSizes, databaseURI: String, serverExecutable: String, serverEnvironment: [String: String],
        selfExecutable: String
    ) {
        self.sizes = sizes
        self.databaseURI = databaseURI
        self.serverExecutable = serverExecutable
        self.serverEnvironment = serverEnvironment
        self.selfExecutable = selfExecutable
        runTag = "b" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        postgresVersion = (try? PGSession(uri: databaseURI).exec("SHOW server_version").first?.first ?? nil) ?? nil
    }

    func run(_ scenario: Scenario) async throws {
        switch scenario {
        case .fanout: try await runFanout()
        case .burst: try await runBurst()
        case .v1: try await runStructured()
        case .durable: try await runDurable()
        case .floor: try await runFloor()
        case .baseline: try await runBaseline()
        case .ingest: try await runIngest()
        case .connections: try await runConnections()
        case .channels: try await runManyChannels()
        case .presence: try await runPresence()
        }
    }

    func nextPhase() -> Int {
        phaseCounter += 1
        return phaseCounter
    }

    func channel(_ name: String) -> String { "\(runTag)_\(name)" }

    static func streamKey(size: Int, burst: Bool) -> String { "\(size)/\(burst ? "burst" : "rate")" }
    static let latencyRowKey = "row"
    static let lastSocketRowKey = "row/last"

    func sizeLabel(_ size: Int) -> String { size % 1024 == 0 ? "\(size / 1024) KB" : "\(size) B" }

    // MARK: - Servers and fleets

    /// Runs `body` against a fresh server, then checks it is still alive, records what it
    /// complained about, and stops it.
    func withServer<T>(
        _ scenario: String, environment: [String: String]? = nil, _ body: (BenchServer) async throws -> T
    ) async throws -> T {
        let server = try await BenchServer.start(
            executable: serverExecutable, databaseURI: databaseURI, poolSize: sizes.poolSize,
            extra: environment ?? serverEnvironment)
        let result: T
        do {
            result = try await body(server)
            try server.checkAlive("at the end of the scenario")
        } catch {
            noteComplaints(of: server, scenario)
            if server.process.process.isRunning { _ = await server.stop() }
            throw error
        }
        noteComplaints(of: server, scenario)
        let status = await server.stop()
        if server.process.process.terminationReason == .uncaughtSignal || status != 0 {
            report.fail(
                scenario,
                "the server exited with \(status) (\(server.process.process.terminationReason == .uncaughtSignal ? "signal" : "status")) on SIGTERM"
            )
        }
        return result
    }

    private func noteComplaints(of server: BenchServer, _ scenario: String) {
        let complaints = server.complaints
        guard !complaints.isEmpty else { return }
        report.note(
            "\(scenario): the server logged \(complaints.count) warning/error lines, e.g. \(complaints.prefix(3).joined(separator: " | "))"
        )
    }

    func spec(port: Int, channel: String, count: Int) -> FleetSpec {
        FleetSpec(
            port: port, channel: channel, count: count, concurrency: sizes.handshakeConcurrency,
            threads: sizes.clientThreads)
    }

    /// Starts worker processes for `spec`, opens every socket (failing on any refusal), runs
    /// `body`, and stops the workers whatever happens.
    func withWorkers<T>(_ spec: FleetSpec, _ body: (WorkerFleet, OpenReport) async throws -> T) async throws -> T {
        let fleet = try await WorkerFleet.start(
            spec: spec, perWorker: sizes.socketsPerWorker, executable: selfExecutable)
        do {
            let opened = try await fleet.open()
            guard opened.failed == 0, opened.opened == spec.count else {
                throw BenchFailure(
                    "\(opened.failed) of \(spec.count) handshakes failed: \(opened.failureSamples.prefix(3).joined(separator: " | "))"
                )
            }
            let result = try await body(fleet, opened)
            await fleet.shutdown()
            return result
        } catch {
            await fleet.shutdown()
            throw error
        }
    }

    /// Sends `stream` and collects it from every socket of `fleet`; fails unless every
    /// socket got every NOTIFY (or its `perSocket` share) exactly once and in order.
    func measure(
        _ stream: NotifyStream, fleet: WorkerFleet, server: BenchServer, label: String, perSocket: Int? = nil
    ) async throws -> (sent: SendReport, received: PhaseReport, cpuSeconds: Double?, clientCPUSeconds: Double?) {
        let cpuBefore = server.cpuSeconds
        let (sent, received, clientCPU) = try await deliver(
            stream, fleet: fleet, label: label, perSocket: perSocket,
            check: { try server.checkAlive("during \(label)") },
            send: { try await NotifySender.send(stream, uri: databaseURI) })
        let cpuAfter = server.cpuSeconds
        return (sent, received, both(cpuBefore, cpuAfter).map { $1 - $0 }, clientCPU)
    }

    /// Sends `stream` with `send` (through the server, or by the floor server) and collects it
    /// from every socket of `fleet`; after `check`, fails unless every socket got every
    /// NOTIFY (or its `perSocket` share) exactly once and in order. Also returns the CPU the
    /// load client used meanwhile.
    func deliver<Sent>(
        _ stream: NotifyStream, fleet: WorkerFleet, label: String, perSocket: Int? = nil,
        check: () throws -> Void = {}, send: () async throws -> Sent
    ) async throws -> (sent: Sent, received: PhaseReport, clientCPUSeconds: Double?) {
        let clientBefore = fleet.cpuSeconds
        let sent = try await send()
        let received = try await fleet.collect(
            phase: stream.phase, expected: perSocket ?? stream.count, stallSeconds: sizes.stallSeconds)
        let clientAfter = fleet.cpuSeconds
        try check()
        guard received.isClean else { throw BenchFailure("\(label): \(received.problems)") }
        if received.latency.negatives > 0 {
            report.note(
                "\(label): \(received.latency.negatives) negative latencies (wall clock stepped?), counted as 0")
        }
        return (sent, received, both(clientBefore, clientAfter).map { $1 - $0 })
    }
}

func both<A, B>(_ a: A?, _ b: B?) -> (A, B)? {
    guard let a, let b else { return nil }
    return (a, b)
}

extension PhaseReport {
    /// Frames per second from the first statement sent to the last frame received.
    func rate(since firstSend: Int64) -> Double? {
        guard frames > 0, lastReceive > firstSend else { return nil }
        return Double(frames) / (Double(lastReceive - firstSend) / 1e6)
    }

    /// Per NOTIFY, the latency to the last socket that got it (µs), sorted.
    var lastSocketLatencies: [Int64] {
        maxLatencyBySeq.filter { $0 >= 0 }.sorted()
    }
}

/// Milliseconds from microseconds, for the table.
func ms(_ micros: Double?) -> Double? { micros.map { $0 / 1000 } }
