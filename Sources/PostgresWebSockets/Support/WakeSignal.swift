import CLinuxShims

#if canImport(Glibc)
    import Glibc
#endif

/// Wakes a thread that sleeps in `poll(2)`: an eventfd that other threads write to.
/// The database threads wait on their libpq socket and on this at the same time.
final class WakeSignal: Sendable {
    let fd: Int32

    init() {
        fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        precondition(fd >= 0, "eventfd failed: \(errno)")
    }

    deinit {
        close(fd)
    }

    func signal() {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    /// Clears pending signals.
    func reset() {
        var value: UInt64 = 0
        _ = read(fd, &value, 8)
    }

    struct Readiness {
        var socketReadable = false
        var socketWritable = false
        var socketError = false
        var woken = false
    }

    /// Waits until `socket` is ready (when >= 0), a signal arrives, or `timeout` seconds pass.
    func wait(socket: Int32 = -1, forWriting: Bool = false, timeout: Double) -> Readiness {
        let readiness = pollReadiness(socket: socket, wakeFD: fd, forWriting: forWriting, timeout: timeout)
        if readiness.woken { reset() }
        return readiness
    }
}

/// poll(2) on a database socket and, optionally, a wake-up descriptor.
func pollReadiness(socket: Int32, wakeFD: Int32 = -1, forWriting: Bool, timeout: Double) -> WakeSignal.Readiness {
    var fds = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]  // poll ignores a negative fd
    if socket >= 0 {
        fds.append(pollfd(fd: socket, events: Int16(forWriting ? POLLIN | POLLOUT : POLLIN), revents: 0))
    }
    let milliseconds = Int32(max(0, min(timeout, 3600)) * 1000)
    var readiness = WakeSignal.Readiness()
    guard poll(&fds, nfds_t(fds.count), milliseconds) > 0 else { return readiness }
    readiness.woken = fds[0].revents != 0
    if fds.count > 1 {
        let revents = Int32(fds[1].revents)
        readiness.socketReadable = revents & Int32(POLLIN) != 0
        readiness.socketWritable = revents & Int32(POLLOUT) != 0
        readiness.socketError = revents & Int32(POLLERR | POLLHUP | POLLNVAL) != 0
    }
    return readiness
}
