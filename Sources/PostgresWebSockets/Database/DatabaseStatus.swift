import NIOConcurrencyHelpers
import Synchronization

/// Told when the database goes up or down, on the listener's thread.
protocol DatabaseStatusObserver: AnyObject, Sendable {
    func databaseStatusChanged(isUp: Bool)
}

/// Whether PostgreSQL is reachable and LISTENs on every channel in use: the fact the health
/// probe reports, that holds client messages back while false, and that wakes paused
/// writers when it turns false. The listener is its only writer; everyone else reads it or
/// is told.
final class DatabaseStatus: Sendable {
    /// Held weakly: an observer (the notifier) holds its status, and a cycle between the two
    /// kept every server's objects alive after it stopped (LeakSanitizer, in the tests that
    /// start and stop hundreds of servers in one process).
    private struct Observer {
        weak var value: (any DatabaseStatusObserver)?
    }

    private struct Subscribers {
        var observers: [Observer] = []
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let up = Atomic<Bool>(false)
    private let subscribers = NIOLockedValueBox(Subscribers())
    /// Seconds the database was down after having been up, and since when it is down now.
    private let outages = NIOLockedValueBox<(total: Double, since: Double?, wasUp: Bool)>((0, nil, false))

    var isUp: Bool { up.load(ordering: .acquiring) }

    func subscribe(_ observer: any DatabaseStatusObserver) {
        subscribers.withLockedValue { $0.observers.append(Observer(value: observer)) }
    }

    /// Returns once the database is up.
    func waitUntilUp() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let isUp = subscribers.withLockedValue { subscribers in
                // Read under the lock `set` takes, so that no change falls between.
                if up.load(ordering: .acquiring) { return true }
                subscribers.waiters.append(continuation)
                return false
            }
            if isUp { continuation.resume() }
        }
    }

    /// Called by the listener only.
    func set(isUp: Bool) {
        let (observers, waiters) = subscribers.withLockedValue { subscribers in
            guard up.exchange(isUp, ordering: .acquiringAndReleasing) != isUp else {
                return ([Observer](), [CheckedContinuation<Void, Never>]())
            }
            let waiters = isUp ? subscribers.waiters : []
            if isUp { subscribers.waiters = [] }
            return (subscribers.observers, waiters)
        }
        let now = monotonicSeconds()
        outages.withLockedValue { outages in
            if isUp {
                if let since = outages.since { outages.total += now - since }
                outages.since = nil
                outages.wasUp = true
            } else if outages.wasUp, outages.since == nil {
                outages.since = now
            }
        }
        observers.forEach { $0.value?.databaseStatusChanged(isUp: isUp) }
        waiters.forEach { $0.resume() }
    }

    /// Seconds of outages since start (the one going on included); waiting for the database
    /// at start is not an outage.
    var outageSeconds: Double {
        let now = monotonicSeconds()
        return outages.withLockedValue { $0.total + ($0.since.map { now - $0 } ?? 0) }
    }
}
