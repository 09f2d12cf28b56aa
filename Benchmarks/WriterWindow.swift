import Synchronization

/// Per-writer flow control for the windowed ingest run: how many of each writer's messages
/// reached PostgreSQL (stored by the listener thread, read by the writers' event loops).
/// A writer sends message n only while n - delivered < window.
final class WriterWindow: Sendable {
    final class Counter: Sendable {
        let delivered = Atomic<Int>(0)
    }

    let size: Int
    private let counters: [Counter]

    init(writers: Int, size: Int) {
        self.size = size
        counters = (0..<writers).map { _ in Counter() }
    }

    func delivered(_ writer: Int, count: Int) {
        counters[writer].delivered.store(count, ordering: .releasing)
    }

    /// Whether `writer` may send its message number `sent` (0-based).
    func allows(_ writer: Int, sent: Int) -> Bool {
        sent - counters[writer].delivered.load(ordering: .acquiring) < size
    }
}
