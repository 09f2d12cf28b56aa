import Testing

@testable import PostgresWebSockets

@Suite("AnswerDeadline")
struct AnswerDeadlineTests {
    @Test("fast answers keep the configured timeout")
    func fastAnswersKeepTheFloor() {
        var deadline = AnswerDeadline(floor: 0.75)
        #expect(deadline.timeout == 0.75)
        for _ in 0..<50 { deadline.answered(after: 0.002) }
        #expect(deadline.timeout == 0.75)
    }

    @Test("slow answers stretch it, up to the ceiling, and fast ones bring it back")
    func slowAnswersStretchIt() {
        var deadline = AnswerDeadline(floor: 0.75, ceiling: 10)
        for _ in 0..<5 { deadline.answered(after: 0.002) }
        deadline.answered(after: 0.7)
        let stretched = deadline.timeout
        #expect(stretched > 0.75, "an answer close to the timeout makes the next wait longer")
        for i in 0..<20 { deadline.answered(after: i % 2 == 0 ? 0.6 : 1.0) }
        #expect(deadline.timeout > 1.0, "answers that keep taking up to a second are waited for")
        for _ in 0..<20 { deadline.answered(after: 30) }
        #expect(deadline.timeout == 10, "a dead path is still noticed")
        for _ in 0..<200 { deadline.answered(after: 0.002) }
        #expect(deadline.timeout == 0.75)
    }
}
