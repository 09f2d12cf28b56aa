import CLinuxShims
import Foundation
import NIOConcurrencyHelpers

/// A child started with posix_spawn, for the long-lived children of tests and benches (servers,
/// watchdogs). Not Foundation's `Process`: on this toolchain (6.3.1) its `run()` copies a whole
/// 256-byte `d_name` for each entry of /proc/self/fd and can read past the end of glibc's
/// buffer, which crashed full test runs here (swift-corelibs-foundation pull request 5472).
public final class ChildProcess: Sendable {
    public enum TerminationReason: Int, Sendable {
        case exit = 1
        case uncaughtSignal = 2
    }

    public let processIdentifier: pid_t
    /// The raw wait status once the child has been reaped.
    private let status = NIOLockedValueBox<Int32?>(nil)

    /// Starts `executable` with `arguments`. Standard input is /dev/null; standard output and
    /// error go to `output` when given, else to /dev/null. No other descriptor is inherited:
    /// NIO's sockets are not close-on-exec, and a child holding them would keep the peers of
    /// parallel tests from seeing them close.
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil, output: Int32? = nil
    ) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if let output {
            posix_spawn_file_actions_adddup2(&actions, output, 1)
            posix_spawn_file_actions_adddup2(&actions, output, 2)
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        pgws_spawn_close_from(&actions, 3)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let variables =
            (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { variables.forEach { free($0) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, executable, &actions, nil, argv, variables)
        guard spawned == 0 else { throw SpawnFailure(executable: executable, error: spawned) }
        processIdentifier = pid
    }

    public var isRunning: Bool { reap(blocking: false) == nil }

    /// The exit code, or the signal that ended it (as Foundation's `Process` reports them).
    public var terminationStatus: Int32 {
        guard let raw = reap(blocking: false) else { return 0 }
        return raw & 0x7f == 0 ? (raw >> 8) & 0xff : raw & 0x7f
    }

    public var terminationReason: TerminationReason {
        guard let raw = reap(blocking: false) else { return .exit }
        return raw & 0x7f == 0 ? .exit : .uncaughtSignal
    }

    public func terminate() { kill(processIdentifier, SIGTERM) }

    public func waitUntilExit() { _ = reap(blocking: true) }

    /// Reaps the child on a thread of its own once it ends, for children nobody waits for.
    public func reapWhenItEnds() {
        Thread { [self] in waitUntilExit() }.start()
    }

    private func reap(blocking: Bool) -> Int32? {
        if let known = status.withLockedValue({ $0 }) { return known }
        var raw: Int32 = 0
        var result: pid_t
        repeat { result = waitpid(processIdentifier, &raw, blocking ? 0 : WNOHANG) } while result < 0 && errno == EINTR
        guard result == processIdentifier else { return status.withLockedValue { $0 } }
        status.withLockedValue { $0 = raw }
        return raw
    }

    struct SpawnFailure: Error, CustomStringConvertible {
        let executable: String
        let error: Int32
        var description: String { "cannot run \(executable): \(String(cString: strerror(error)))" }
    }
}
