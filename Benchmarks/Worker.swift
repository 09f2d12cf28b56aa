import ArgumentParser
import Foundation

/// `pgws-bench worker --spec JSON`: a child process that holds a share of the sockets
/// (one process may hold 20,000 files, so large runs need several). It answers one JSON
/// line on stdout, prefixed with `WorkerLink.prefix`, for each JSON command on stdin.
struct WorkerCommandLine: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Internal: holds load sockets for the benchmark process.", shouldDisplay: false
    )

    @Option(help: "FleetSpec as JSON.")
    var spec: String

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        let spec = try JSONDecoder().decode(FleetSpec.self, from: Data(self.spec.utf8))
        let fleet = SocketFleet(spec: spec)
        WorkerLink.send(WorkerReply(ready: true))
        for await line in WorkerLink.stdinLines() {
            guard let command = try? JSONDecoder().decode(WorkerCommand.self, from: Data(line.utf8)) else {
                WorkerLink.send(WorkerReply(error: "unreadable command: \(line)"))
                continue
            }
            switch command.kind {
            case .open:
                WorkerLink.send(WorkerReply(opened: await fleet.open()))
            case .collect:
                let report = await fleet.collect(
                    phase: command.phase, expected: command.expected, stallSeconds: command.stallSeconds)
                WorkerLink.send(WorkerReply(collected: report))
            case .close:
                WorkerLink.send(WorkerReply(closed: await fleet.close()))
            case .exit:
                await fleet.shutdown()
                return
            }
        }
        await fleet.shutdown()  // stdin closed: the parent is gone
    }
}

enum WorkerLink {
    static let prefix = "PGWS-BENCH-WORKER "

    static func send(_ reply: WorkerReply) {
        guard let data = try? JSONEncoder().encode(reply) else { return }
        FileHandle.standardOutput.write(Data(prefix.utf8) + data + Data("\n".utf8))
    }

    static func stdinLines() -> AsyncStream<String> {
        AsyncStream { continuation in
            let thread = Thread {
                while let line = readLine() {
                    continuation.yield(line)
                }
                continuation.finish()
            }
            thread.name = "worker-stdin"
            thread.start()
        }
    }
}
