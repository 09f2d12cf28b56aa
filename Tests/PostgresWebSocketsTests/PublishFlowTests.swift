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

/// The action, as text a test can compare: none, pause, resume, refused:<texts>.
private func kind(_ action: PublishFlow.Action) -> String {
    switch action {
    case .none: "none"
    case .pauseReading: "pause"
    case .resumeReading: "resume"
    case .refused(let messages):
        "refused:"
            + messages.map { String(decoding: $0.notifications[0].payload, as: UTF8.self) }.joined(separator: ",")
    }
}

@Suite("PublishFlow")
struct PublishFlowTests {
    @Test("a congested queue pauses the writer; relief resumes it")
    func congestionPausesAndReliefResumes() {
        var flow = PublishFlow()
        let queue = ScriptedQueue([.accepted, .congested])
        #expect(kind(flow.offer(message("a"), databaseUp: true, submit: queue.submit)) == "none")
        #expect(kind(flow.offer(message("b"), databaseUp: true, submit: queue.submit)) == "pause")
        #expect(flow.isPaused)
        #expect(kind(flow.relieved(databaseUp: true, submit: queue.submit)) == "resume")
        #expect(!flow.isPaused)
        #expect(queue.taken == ["a", "b"])
    }

    @Test("a full queue while PostgreSQL is up holds the message, in order, until relief")
    func fullWhileUpHolds() {
        var flow = PublishFlow()
        let queue = ScriptedQueue([.full])
        #expect(kind(flow.offer(message("a"), databaseUp: true, submit: queue.submit)) == "pause")
        #expect(
            kind(flow.offer(message("b"), databaseUp: true, submit: queue.submit)) == "none",
            "read before the pause took")
        #expect(queue.taken == [])
        queue.answers = [.accepted, .congested]
        #expect(kind(flow.relieved(databaseUp: true, submit: queue.submit)) == "none", "congested again: stays paused")
        #expect(queue.taken == ["a", "b"])
        #expect(kind(flow.relieved(databaseUp: true, submit: queue.submit)) == "resume")
    }

    @Test("many held messages drain over several reliefs, each placed once, in order")
    func manyHeldDrainInOrder() {
        var flow = PublishFlow()
        let queue = ScriptedQueue([.full])
        let texts = (0..<5_000).map { "m\($0)" }
        #expect(kind(flow.offer(message(texts[0]), databaseUp: true, submit: queue.submit)) == "pause")
        for text in texts.dropFirst() {
            #expect(kind(flow.offer(message(text), databaseUp: true, submit: queue.submit)) == "none")
        }
        // Relief 1 stops at a congested answer, relief 2 at a full queue, relief 3 takes the rest.
        queue.answers = Array(repeating: .accepted, count: 999) + [.congested]
        #expect(kind(flow.relieved(databaseUp: true, submit: queue.submit)) == "none")
        #expect(queue.taken == Array(texts[..<1_000]))
        queue.answers = Array(repeating: .accepted, count: 1_500) + [.full]
        #expect(kind(flow.relieved(databaseUp: true, submit: queue.submit)) == "none")
        #expect(queue.taken == Array(texts[..<2_500]))
        queue.answers = []
        #expect(kind(flow.relieved(databaseUp: true, submit: queue.submit)) == "resume")
        #expect(queue.taken == texts)
        #expect(!flow.isPaused)
    }

    @Test("a full queue while PostgreSQL is down refuses the message (raw sockets close with 1013)")
    func fullWhileDownCloses() {
        var flow = PublishFlow()
        let queue = ScriptedQueue([.full])
        #expect(kind(flow.offer(message("a"), databaseUp: false, submit: queue.submit)) == "refused:a")
    }

    @Test("held messages meet a database that went down: they are refused and nothing is held")
    func heldWhenDatabaseGoesDown() {
        var flow = PublishFlow()
        let queue = ScriptedQueue([.full])
        _ = flow.offer(message("a"), databaseUp: true, submit: queue.submit)
        queue.answers = [.full]
        #expect(kind(flow.relieved(databaseUp: false, submit: queue.submit)) == "refused:a")
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
        #expect(kind(flow.relieved(databaseUp: true, submit: queue.submit)) == "none")
        #expect(queue.taken == [])
    }
}
