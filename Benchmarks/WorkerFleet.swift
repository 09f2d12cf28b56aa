import BridgeTestSupport
import Foundation
import Synchronization

/// One worker child process, seen from the benchmark process.
final class WorkerProcess: @unchecked Sendable {
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let lines = EventQueue<String>()
    static let endOfOutput = "\u{0}EOF"

    init(executable: String, spec: FleetSpec) throws {
        let json = String(decoding: try JSONEncoder().encode(spec), as: UTF8.self)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["worker", "--spec", json]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        try process.run()
        ChildProcesses.shared.add(process.processIdentifier)
        let fd = output.fileHandleForReading.fileDescriptor
        let lines = self.lines
        let reader = Thread {
            var pending: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(fd, &chunk, chunk.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                pending += chunk[0..<n]
                while let newline = pending.firstIndex(of: 10) {
                    lines.push(String(decoding: pending[..<newline], as: UTF8.self))
                    pending.removeSubrange(...newline)
                }
            }
            lines.push(WorkerProcess.endOfOutput)
        }
        reader.name = "worker-reader"
        reader.start()
    }

    var pid: Int32 { process.processIdentifier }

    func send(_ command: WorkerCommand) throws {
        let data = try JSONEncoder().encode(command)
        try input.fileHandleForWriting.write(contentsOf: data + Data("\n".utf8))
    }

    /// The next reply; fails if the worker exits or stays silent for `timeout` seconds.
    func reply(timeout: Double) async throws -> WorkerReply {
        while true {
            let line: String
            do {
                line = try await lines.next(timeout: timeout)
            } catch {
                throw BenchFailure("worker \(pid) did not answer within \(Int(timeout)) s")
            }
            if line == Self.endOfOutput {
                process.waitUntilExit()
                throw BenchFailure("worker \(pid) exited (status \(process.terminationStatus))")
            }
            guard line.hasPrefix(WorkerLink.prefix) else {
                FileHandle.standardError.write(Data("[worker \(pid)] \(line)\n".utf8))
                continue
            }
            let reply = try JSONDecoder().decode(
                WorkerReply.self, from: Data(line.dropFirst(WorkerLink.prefix.count).utf8))
            if let error = reply.error { throw BenchFailure("worker \(pid): \(error)") }
            return reply
        }
    }

    /// Asks the worker to exit; kills it if it has not after 10 s.
    func stop() async {
        try? send(WorkerCommand(kind: .exit))
        try? input.fileHandleForWriting.close()
        let deadline = Clock.monotonic() + 10
        while process.isRunning && Clock.monotonic() < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        ChildProcesses.shared.remove(process.processIdentifier)
    }
}

/// Sockets spread over worker processes, under `perWorker` sockets each, driven as one.
final class WorkerFleet: Sendable {
    let workers: [WorkerProcess]
    let count: Int

    static func start(spec: FleetSpec, perWorker: Int, executable: String) async throws -> WorkerFleet {
        let parts = max(1, (spec.count + perWorker - 1) / perWorker)
        var workers: [WorkerProcess] = []
        var first = spec.firstIndex
        for part in 0..<parts {
            var share = spec
            share.firstIndex = first
            share.count = spec.count / parts + (part < spec.count % parts ? 1 : 0)
            first += share.count
            workers.append(try WorkerProcess(executable: executable, spec: share))
        }
        let fleet = WorkerFleet(workers: workers, count: spec.count)
        do {
            for worker in workers {
                guard try await worker.reply(timeout: 120).ready else {
                    throw BenchFailure("worker \(worker.pid) not ready")
                }
            }
        } catch {
            await fleet.shutdown()
            throw error
        }
        return fleet
    }

    private init(workers: [WorkerProcess], count: Int) {
        self.workers = workers
        self.count = count
    }

    /// Every worker opens its sockets at the same time.
    func open() async throws -> OpenReport {
        for worker in workers { try worker.send(WorkerCommand(kind: .open)) }
        var report = OpenReport()
        for worker in workers {
            guard let part = try await worker.reply(timeout: 600).opened else {
                throw BenchFailure("worker: no open report")
            }
            report.merge(part)
        }
        return report
    }

    func collect(phase: Int, expected: Int, stallSeconds: Double) async throws -> PhaseReport {
        let command = WorkerCommand(kind: .collect, phase: phase, expected: expected, stallSeconds: stallSeconds)
        for worker in workers { try worker.send(command) }
        var report: PhaseReport? = nil
        for worker in workers {
            guard let part = try await worker.reply(timeout: 3600).collected else {
                throw BenchFailure("worker: no phase report")
            }
            if report == nil { report = part } else { report!.merge(part) }
        }
        return report!
    }

    func close() async throws -> CloseReport {
        for worker in workers { try worker.send(WorkerCommand(kind: .close)) }
        var report = CloseReport()
        for worker in workers {
            guard let part = try await worker.reply(timeout: 120).closed else {
                throw BenchFailure("worker: no close report")
            }
            report.merge(part)
        }
        return report
    }

    func shutdown() async {
        for worker in workers { await worker.stop() }
    }

    /// CPU seconds the worker processes used so far (utime + stime).
    var cpuSeconds: Double? {
        let parts = workers.map { ProcessStats.cpuSeconds(pid: $0.pid) }
        return parts.contains { $0 == nil } ? nil : parts.reduce(0) { $0 + $1! }
    }
}
