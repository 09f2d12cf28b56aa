import Synchronization
import NIOConcurrencyHelpers

/// Bounds the frames handed to the event loops and not yet written to every socket.
///
/// When the loops fall behind the listener, the listener stops reading from PostgreSQL
/// (whose notification queue is built to absorb bursts) instead of queueing frames in
/// memory without limit; it resumes once half the budget is free again.
final class DeliveryBudget: Sendable {
    let limit: Int
    private let inFlight = Atomic<Int>(0)
    private let onRelease = NIOLockedValueBox<(@Sendable () -> Void)?>(nil)

    init(limit: Int) {
        self.limit = limit
    }

    var isExhausted: Bool { inFlight.load(ordering: .relaxed) >= limit }

    var bytesInFlight: Int { inFlight.load(ordering: .relaxed) }

    /// Called (on an event loop) when the budget drops below half after being exhausted.
    func whenReleased(_ callback: @escaping @Sendable () -> Void) {
        onRelease.withLockedValue { $0 = callback }
    }

    func take(_ bytes: Int) {
        inFlight.add(bytes, ordering: .relaxed)
    }

    func give(_ bytes: Int) {
        let after = inFlight.subtract(bytes, ordering: .relaxed).newValue
        let threshold = limit / 2
        if after < threshold && after + bytes >= threshold {
            onRelease.withLockedValue { $0 }?()
        }
    }
}
