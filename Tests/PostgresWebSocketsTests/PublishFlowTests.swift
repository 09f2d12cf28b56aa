import Testing

@testable import PostgresWebSockets

private func message(_ text: String) -> OutgoingMessage {
    OutgoingMessage(notifications: [("chat", Array(text.utf8))], sender: nil)
}

/// A queue that answers with scripted results and remembers what it took.
private final class ScriptedQueue {
    var answers: [SubmitResult]
    var taken: [String] = []
    init(_ answers: [SubmitResult]) { self.answers = answers }
    func submit(_ message: OutgoingMessage) -> SubmitResult {
        let answer = answers.isEmpty ? .accepted : answers.removeFirst()
        if answer != .full { taken.append(String(decoding: message.notifications[0].payload, as: UTF8.self)) }
        return answer
    }
}

@Suite("PublishFlow")
struct PublishFlowTests {
    @Test("a congested queue pauses the writer; relief resumes it")
    func congestionPausesAndReliefResumes() {
        var flow = PublishFlow()
        let queue = ScriptedQueue([.accepted, .congested])
        #expect(flow.offer(message("a"), databaseUp: true, submit: queue.submit) == .none)
        #expect(flow.offer(message("b"), databaseUp: true, submit: queue.submit) == .pauseReading)
        #expect(flow.isPaused)
        #expect(flow.relieved(databaseUp: true, submit: queue.submit) == .resumeReading)
        #expect(!flow.isPaused)
        #expect(queue.taken == ["a", "b"])
    }

    @Test("a full queue while PostgreSQL is up holds the message, in order, until relief")
    func fullWhileUpHolds() {
        var flow = PublishFlow()
        let queue = ScriptedQueue([.full])
        #expect(flow.offer(message("a"), databaseUp: true, submit: queue.submit) == .pauseReading)
        #expect(flow.offer(message("b"), databaseUp: true, submit: queue.submit) == .none, "read before the pause took")
        #expect(queue.taken == [])
        queue.answers = [.accepted, .congested]
        #expect(flow.relieved(databaseUp: true, submit: queue.submit) == .none, "congested again: stays paused")
        #expect(queue.taken == ["a", "b"])
        #expect(flow.relieved(databaseUp: true, submit: queue.submit) == .resumeReading)
    }

    @Test("a full queue while PostgreSQL is down closes the writer with 1013")
    func fullWhileDownCloses() {
        var flow = PublishFlow()
        let queue = ScriptedQueue([.full])
        #expect(flow.offer(message("a"), databaseUp: false, submit: queue.submit) == .close(.databaseUnavailable))
    }

    @Test("held messages meet a database that went down: the writer is closed and holds nothing")
    func heldWhenDatabaseGoesDown() {
        var flow = PublishFlow()
        let queue = ScriptedQueue([.full])
        _ = flow.offer(message("a"), databaseUp: true, submit: queue.submit)
        queue.answers = [.full]
        #expect(flow.relieved(databaseUp: false, submit: queue.submit) == .close(.databaseUnavailable))
        #expect(flow.takeHeld().isEmpty)
    }

    @Test("what is held when the socket ends is handed over, in order")
    func heldAtTeardown() {
        var flow = PublishFlow()
        let queue = ScriptedQueue([.full])
        _ = flow.offer(message("a"), databaseUp: true, submit: queue.submit)
        _ = flow.offer(message("b"), databaseUp: true, submit: queue.submit)
        #expect(flow.takeHeld().map { String(decoding: $0.notifications[0].payload, as: UTF8.self) } == ["a", "b"])
        #expect(flow.takeHeld().isEmpty)
    }

    @Test("relief for a writer that is not paused does nothing")
    func reliefWhileReading() {
        var flow = PublishFlow()
        let queue = ScriptedQueue([])
        #expect(flow.relieved(databaseUp: true, submit: queue.submit) == .none)
        #expect(queue.taken == [])
    }
}
