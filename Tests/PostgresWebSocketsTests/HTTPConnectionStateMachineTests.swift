import NIOCore
import NIOHTTP1
import Testing

@testable import PostgresWebSockets

private typealias Machine = HTTPConnectionStateMachine<Int>

private func route(_ action: Machine.ReadAction) -> RequestHead? {
    if case .route(let head) = action { return head }
    return nil
}

private func refusal(_ action: Machine.ReadAction) -> Refusal? {
    if case .refuse(let refusal) = action { return refusal }
    return nil
}

@Suite("HTTPConnectionStateMachine")
struct HTTPConnectionStateMachineTests {
    @Test("a head split anywhere across reads is parsed once it is complete")
    func splitHead() {
        let request = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        for split in 1..<request.utf8.count {
            var machine = Machine(maxHeadBytes: 1024)
            let bytes = Array(request.utf8)
            #expect(machine.received(ByteBuffer(bytes: bytes[..<split])).isNone)
            let head = route(machine.received(ByteBuffer(bytes: bytes[split...])))
            #expect(head?.path == "/health", "split at \(split)")
        }
    }

    @Test("garbage is refused as it arrives, not at the timeout")
    func garbageAtOnce() {
        var machine = Machine(maxHeadBytes: 1024)
        #expect(refusal(machine.received(ByteBuffer(string: "GET / HTTP/1.1\n")))?.code == .badRequest)
        #expect(machine.received(ByteBuffer(string: "more")).isNone, "answered: later bytes are ignored")
    }

    @Test("a head over max-header-size is refused with 431, complete or not")
    func tooLarge() {
        var open = Machine(maxHeadBytes: 1024)
        #expect(
            refusal(open.received(ByteBuffer(string: "GET /" + String(repeating: "a", count: 1100))))?.status
                == .requestHeaderFieldsTooLarge)
        var complete = Machine(maxHeadBytes: 1024)
        let long = "GET /\(String(repeating: "a", count: 1100)) HTTP/1.1\r\n\r\n"
        #expect(refusal(complete.received(ByteBuffer(string: long)))?.status == .requestHeaderFieldsTooLarge)
    }

    @Test("frames sent right after the handshake wait for the 101 and reach the session first")
    func earlyFrames() {
        var machine = Machine(maxHeadBytes: 1024)
        _ = machine.received(ByteBuffer(string: "GET /t HTTP/1.1\r\n\r\nAB"))
        machine.awaitListen(42)
        _ = machine.received(ByteBuffer(string: "CD"))
        guard case .upgrade(let pending, let early) = machine.listening(connectionIsActive: true) else {
            Issue.record("expected the upgrade")
            return
        }
        #expect(pending == 42)
        #expect(early.map { String(buffer: $0) } == "ABCD")
    }

    @Test("more than maxEarlyBytes before the 101 drops the connection")
    func tooManyEarlyBytes() {
        var machine = Machine(maxHeadBytes: 1024)
        _ = machine.received(ByteBuffer(string: "GET /t HTTP/1.1\r\n\r\n"))
        machine.awaitListen(1)
        let chunk = ByteBuffer(repeating: 0x81, count: Machine.maxEarlyBytes)
        #expect(machine.received(chunk).isNone)
        guard case .closeConnection = machine.received(ByteBuffer(string: "x")) else {
            Issue.record("expected the connection to be dropped")
            return
        }
    }

    @Test("the time limit: silence is closed without an answer, a slow request gets 408")
    func timeouts() {
        var silent = Machine(maxHeadBytes: 1024)
        guard case .closeSilently = silent.timedOut() else {
            Issue.record("a connection that sent nothing gets no answer")
            return
        }
        var slow = Machine(maxHeadBytes: 1024)
        _ = slow.received(ByteBuffer(string: "GET / HT"))
        guard case .refuse(let refusal, let pending) = slow.timedOut() else {
            Issue.record("expected 408")
            return
        }
        #expect(refusal.status == .requestTimeout)
        #expect(pending == nil)
    }

    @Test("an upgrade whose LISTEN outlives the time limit gets 408 and gives its admission back")
    func timeoutDuringListen() {
        var machine = Machine(maxHeadBytes: 1024)
        _ = machine.received(ByteBuffer(string: "GET /t HTTP/1.1\r\n\r\n"))
        machine.awaitListen(7)
        guard case .refuse(let refusal, let pending) = machine.timedOut() else {
            Issue.record("expected 408")
            return
        }
        #expect(refusal.status == .requestTimeout)
        #expect(pending == 7)
        guard case .none = machine.listening(connectionIsActive: true) else {
            Issue.record("a LISTEN confirmed after the 408 must not upgrade")
            return
        }
    }

    @Test("a connection that ends while its LISTEN is pending gives its admission back")
    func closedDuringListen() {
        var machine = Machine(maxHeadBytes: 1024)
        _ = machine.received(ByteBuffer(string: "GET /t HTTP/1.1\r\n\r\n"))
        machine.awaitListen(3)
        guard case .abandon(3) = machine.closed() else {
            Issue.record("expected the admission back")
            return
        }
        var inactive = Machine(maxHeadBytes: 1024)
        _ = inactive.received(ByteBuffer(string: "GET /t HTTP/1.1\r\n\r\n"))
        inactive.awaitListen(4)
        guard case .abandon(4) = inactive.listening(connectionIsActive: false) else {
            Issue.record("expected the admission back")
            return
        }
    }
}

extension HTTPConnectionStateMachine.ReadAction {
    var isNone: Bool {
        if case .none = self { return true }
        return false
    }
}
