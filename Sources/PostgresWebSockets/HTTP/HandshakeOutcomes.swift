import NIOConcurrencyHelpers

/// How handshakes (WebSocket and event stream) ended: `accepted`, or the code of their
/// refusal (`unauthorized`, `forbidden`, `timeout`, ...). Counted once per handshake, under a
/// lock: a handshake costs microseconds, the lock tens of nanoseconds.
final class HandshakeOutcomes: Sendable {
    private let counts = NIOLockedValueBox<[String: Int]>([:])

    func accepted() { record("accepted") }

    func refused(_ code: Refusal.Code) { record(code.name) }

    private func record(_ outcome: String) {
        counts.withLockedValue { $0[outcome, default: 0] += 1 }
    }

    /// Sorted by outcome, for a stable exposition.
    var snapshot: [(String, Int)] {
        counts.withLockedValue { $0 }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }
}
