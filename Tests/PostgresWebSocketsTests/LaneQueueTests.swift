import Testing

@testable import PostgresWebSockets

private func message(_ text: String, channels: Int = 1) -> LaneQueue.Entry {
    LaneQueue.Entry(
        message: OutgoingMessage(
            notifications: (0..<channels).map { ("c\($0)", Array(text.utf8)) }, sender: nil),
        counted: true)
}

private func texts(_ batch: [LaneQueue.Entry]) -> [String] {
    batch.map { String(decoding: $0.message.notifications[0].payload, as: UTF8.self) }
}

@Suite("LaneQueue")
struct LaneQueueTests {
    @Test("only the first message of an idle lane asks for a wake-up")
    func wakeOnlyWhenIdle() {
        var queue = LaneQueue()
        let first = queue.append(message("a"))
        let second = queue.append(message("b"))
        #expect(first && !second)
        _ = queue.nextBatch(maxNotifications: 100, maxBytes: 1 << 20)
        _ = queue.finish(.committed)
        let afterIdle = queue.append(message("c"))
        #expect(afterIdle)
    }

    @Test("a batch takes everything queued, in order, within the notification and byte limits")
    func batchLimits() {
        var queue = LaneQueue()
        for text in ["a", "b", "c", "d", "e"] { _ = queue.append(message(text, channels: 2)) }
        #expect(texts(queue.nextBatch(maxNotifications: 4, maxBytes: 1 << 20)) == ["a", "b"])
        #expect(queue.finish(.committed) == .completed(count: 2, counted: 2))
        #expect(texts(queue.nextBatch(maxNotifications: 100, maxBytes: 12)) == ["c", "d"], "6 bytes each")
        _ = queue.finish(.committed)
        #expect(texts(queue.nextBatch(maxNotifications: 1, maxBytes: 1)) == ["e"], "one message always goes")
    }

    @Test("a connection failure keeps the batch at the head for the retry")
    func retryAfterConnectionFailure() {
        var queue = LaneQueue()
        for text in ["a", "b"] { _ = queue.append(message(text)) }
        #expect(texts(queue.nextBatch(maxNotifications: 100, maxBytes: 1 << 20)) == ["a", "b"])
        #expect(queue.finish(.connectionFailed) == .retry)
        #expect(queue.count == 2)
        #expect(texts(queue.nextBatch(maxNotifications: 100, maxBytes: 1 << 20)) == ["a", "b"])
    }

    @Test("a refused batch is sent again one message at a time; only the refused one leaves unsent")
    func isolatesTheRefusedMessage() {
        var queue = LaneQueue()
        for text in ["a", "bad", "c"] { _ = queue.append(message(text)) }
        let refusal = DatabaseError(kind: .content, message: "invalid byte sequence", sqlState: "22021")
        _ = queue.nextBatch(maxNotifications: 100, maxBytes: 1 << 20)
        #expect(queue.finish(.refused(refusal)) == .retry)
        #expect(texts(queue.nextBatch(maxNotifications: 100, maxBytes: 1 << 20)) == ["a"])
        #expect(queue.finish(.committed) == .completed(count: 1, counted: 1))
        #expect(texts(queue.nextBatch(maxNotifications: 100, maxBytes: 1 << 20)) == ["bad"])
        #expect(queue.finish(.refused(refusal)) == .rejected(counted: 1))
        #expect(texts(queue.nextBatch(maxNotifications: 100, maxBytes: 1 << 20)) == ["c"])
        #expect(queue.finish(.committed) == .completed(count: 1, counted: 1))
        #expect(queue.isEmpty)
    }

    @Test("meta events are queued but not counted against max-pending-messages")
    func metaEventsAreNotCounted() {
        var queue = LaneQueue()
        _ = queue.append(message("client"))
        _ = queue.append(LaneQueue.Entry(message: OutgoingMessage(notifications: [], sender: nil), counted: false))
        _ = queue.nextBatch(maxNotifications: 100, maxBytes: 1 << 20)
        #expect(queue.finish(.committed) == .completed(count: 2, counted: 1))
    }

    @Test("order survives many batches and the queue's compaction")
    func orderAcrossCompaction() {
        var queue = LaneQueue()
        var sent: [String] = []
        for round in 0..<50 {
            for i in 0..<7 { _ = queue.append(message("\(round)-\(i)")) }
            sent += texts(queue.nextBatch(maxNotifications: 5, maxBytes: 1 << 20))
            _ = queue.finish(.committed)
        }
        while !queue.isEmpty {
            sent += texts(queue.nextBatch(maxNotifications: 5, maxBytes: 1 << 20))
            _ = queue.finish(.committed)
        }
        #expect(sent == (0..<50).flatMap { round in (0..<7).map { "\(round)-\($0)" } })
    }
}
