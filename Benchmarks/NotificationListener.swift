import CLibPQ
import Foundation
import Synchronization

/// Receives what a bare libpq LISTEN connection gets (the baseline, and the check of what
/// client messages reach PostgreSQL). Called on the listener's thread only.
protocol NotificationSink: AnyObject {
    /// `now`: wall clock (µs) read once after each `PQconsumeInput` that returned data.
    func received(channel: UnsafePointer<CChar>, payload: UnsafeRawBufferPointer, now: Int64)
}

/// A bare libpq LISTEN connection on a thread of its own: poll(2) on the socket,
/// `PQconsumeInput`, then drain `PQnotifies` into the sink. `count` can be read anywhere;
/// the sink's state only after `stop()`.
final class NotificationListener: @unchecked Sendable {
    private let session: PGSession
    private let sink: any NotificationSink
    private let stopping = Atomic<Bool>(false)
    private let received = Atomic<Int>(0)
    private let finished = Mutex<CheckedContinuation<Void, Never>?>(nil)
    private let done = Atomic<Bool>(false)
    private var failure: String? = nil

    init(uri: String, channels: [String], sink: any NotificationSink) throws {
        session = try PGSession(uri: uri)
        for channel in channels { try session.listen(channel) }
        self.sink = sink
        let thread = Thread { [self] in self.run() }
        thread.name = "bench-listener"
        thread.start()
    }

    /// Notifications received so far.
    var count: Int { received.load(ordering: .relaxed) }

    private func run() {
        let connection = session.connection
        let fd = PQsocket(connection)
        while !stopping.load(ordering: .relaxed) {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, 20)
            guard ready > 0 else { continue }
            guard PQconsumeInput(connection) == 1 else {
                failure = String(cString: PQerrorMessage(connection))
                break
            }
            let now = Clock.wallMicros()
            var n = 0
            while let notify = PQnotifies(connection) {
                let extra = notify.pointee.extra!
                sink.received(
                    channel: notify.pointee.relname,
                    payload: UnsafeRawBufferPointer(start: extra, count: strlen(extra)),
                    now: now)
                PQfreemem(notify)
                n += 1
            }
            if n > 0 { received.add(n, ordering: .relaxed) }
        }
        let continuation = finished.withLock { continuation -> CheckedContinuation<Void, Never>? in
            done.store(true, ordering: .sequentiallyConsistent)
            defer { continuation = nil }
            return continuation
        }
        continuation?.resume()
    }

    /// Waits until `total` notifications arrived, or none arrived for `stallSeconds`.
    /// Returns whether all arrived.
    func wait(forTotal total: Int, stallSeconds: Double) async -> Bool {
        var last = -1
        var lastProgress = Clock.monotonic()
        while true {
            let now = count
            if now >= total { return true }
            if done.load(ordering: .relaxed) { return false }
            if now != last {
                last = now
                lastProgress = Clock.monotonic()
            } else if Clock.monotonic() - lastProgress > stallSeconds {
                return false
            }
            try? await Task.sleep(for: .milliseconds(2))
        }
    }

    /// Stops the thread and waits for it; returns the connection error if there was one.
    func stop() async -> String? {
        stopping.store(true, ordering: .sequentiallyConsistent)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = finished.withLock { stored -> Bool in
                if done.load(ordering: .sequentiallyConsistent) { return true }
                stored = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
        return failure
    }
}
