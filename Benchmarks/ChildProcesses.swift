import Dispatch
import Foundation
import Synchronization

/// Every child process the benchmark starts (servers, workers), so that an interrupted run
/// (SIGINT, SIGTERM) stops them before it exits. The throwaway PostgreSQL has its own
/// watchdog, which removes the cluster once this process is gone.
final class ChildProcesses: Sendable {
    static let shared = ChildProcesses()

    private let pids = Mutex<Set<Int32>>([])
    /// Written once, at start-up, before any child exists.
    nonisolated(unsafe) private static var sources: [any DispatchSourceSignal] = []

    func add(_ pid: Int32) { pids.withLock { _ = $0.insert(pid) } }
    func remove(_ pid: Int32) { pids.withLock { _ = $0.remove(pid) } }

    /// On SIGINT or SIGTERM: SIGTERM to every child, SIGKILL to those still there after
    /// 3 s, then exit with 128 + signal.
    func stopChildrenOnSignals() {
        for signalNumber in [SIGINT, SIGTERM] {
            #if canImport(Darwin)
                signal(signalNumber, SIG_IGN)  // kqueue delivers it to the source; Linux's dispatch needs the default
            #endif
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { [self] in
                let children = pids.withLock { $0 }
                FileHandle.standardError.write(
                    Data("pgws-bench: interrupted, stopping \(children.count) child processes\n".utf8))
                for pid in children { kill(pid, SIGTERM) }
                let deadline = Clock.monotonic() + 3
                while Clock.monotonic() < deadline, children.contains(where: { kill($0, 0) == 0 }) {
                    Clock.sleep(seconds: 0.05)
                }
                for pid in children where kill(pid, 0) == 0 { kill(pid, SIGKILL) }
                exit(128 + signalNumber)
            }
            source.resume()
            Self.sources.append(source)
        }
    }
}
