import Synchronization
import NIOConcurrencyHelpers

/// Counts open WebSockets against `max-connections`. A slot is taken when a handshake is
/// authorized, before the upgrade, so concurrent handshakes cannot overshoot the limit; the
/// `Admission` that holds it gives it back exactly once.
final class ConnectionSlots: Sendable {
    let limit: Int
    private let open = Atomic<Int>(0)
    private let emptied = NIOLockedValueBox<[CheckedContinuation<Void, Never>]>([])

    init(limit: Int) {
        self.limit = limit
    }

    var count: Int { open.load(ordering: .relaxed) }

    func take() -> Bool {
        let limit = self.limit
        return open.update { $0 < limit ? $0 + 1 : nil } != nil
    }

    func giveBack() {
        guard open.subtract(1, ordering: .relaxed).newValue == 0 else { return }
        for waiter in emptied.withLockedValue({ waiters in
            defer { waiters = [] }; return waiters
        }) {
            waiter.resume()
        }
    }

    /// Returns once no slot is taken (shutdown waits for sockets to finish closing).
    func waitUntilEmpty() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let isEmpty = emptied.withLockedValue { waiters in
                // Checked under the lock that `giveBack` takes, so no wake-up falls between.
                if open.load(ordering: .relaxed) == 0 { return true }
                waiters.append(continuation)
                return false
            }
            if isEmpty { continuation.resume() }
        }
    }
}
