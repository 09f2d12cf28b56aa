import Testing

@testable import PostgresWebSockets

private func keys(_ names: String...) -> [ChannelKey] { names.map(ChannelKey.init) }

/// Runs the machine's idle/sync cycle the way the listener thread does, answering every
/// round trip at once, until the connection is idle. Returns the statements sent and the
/// waiters let through.
private func settle(
    _ machine: inout ListenStateMachine<Int>, received: UInt64 = 0
) -> (syncs: [ListenStateMachine<Int>.Sync], ready: [Int]) {
    var syncs: [ListenStateMachine<Int>.Sync] = []
    var ready: [Int] = []
    while let next = machine.nextCommand(maxStatements: 1000) {
        switch next {
        case .sync(let sync):
            syncs.append(sync)
            ready += machine.syncSucceeded(received: received)
        case .idle(_, let through):
            ready += through
            return (syncs, ready)
        }
    }
    return (syncs, ready)
}

@Suite("ListenStateMachine")
struct ListenStateMachineTests {
    @Test("the first holder of a channel LISTENs, the last one's release UNLISTENs, others send nothing")
    func referenceCounting() {
        var machine = ListenStateMachine<Int>()
        machine.connected()
        _ = settle(&machine)
        #expect(machine.acquire(keys("a")) == true)
        #expect(machine.acquire(keys("a")) == false)
        #expect(settle(&machine).syncs == [.init(listen: keys("a"))])
        #expect(machine.release(keys("a")) == false)
        #expect(settle(&machine).syncs == [])
        #expect(machine.release(keys("a")) == true)
        #expect(settle(&machine).syncs == [.init(unlisten: keys("a"))])
        #expect(machine.listeningCount == 0)
    }

    @Test(
        "a channel is LISTENed without a break from the notification count of its LISTEN until it is UNLISTENed or the connection is lost"
    )
    func listenedSince() {
        var machine = ListenStateMachine<Int>()
        machine.connected()
        _ = machine.acquire(keys("a"))
        #expect(machine.listenedSince(ChannelKey("a")) == nil, "not LISTENed yet")
        _ = settle(&machine, received: 10)
        #expect(machine.listenedSince(ChannelKey("a")) == 10)
        _ = machine.acquire(keys("b"))
        _ = settle(&machine, received: 25)
        #expect(machine.listenedSince(ChannelKey("a")) == 10, "another channel's LISTEN leaves it alone")
        #expect(machine.listenedSince(ChannelKey("b")) == 25)
        _ = machine.release(keys("b"))
        _ = settle(&machine, received: 30)
        #expect(machine.listenedSince(ChannelKey("b")) == nil)
        _ = machine.acquire(keys("b"))
        _ = settle(&machine, received: 40)
        #expect(machine.listenedSince(ChannelKey("b")) == 40, "UNLISTENed in between: a new start")
        _ = machine.connectionLost()
        #expect(machine.listenedSince(ChannelKey("a")) == nil)
        machine.connected()
        _ = settle(&machine, received: 50)
        #expect(machine.listenedSince(ChannelKey("a")) == 50, "LISTENed again on a new connection: a new start")
    }

    @Test("while the database is down a waiter need not wait; once up, it waits for its LISTEN")
    func waitingDependsOnStatus() {
        var machine = ListenStateMachine<Int>()
        _ = machine.acquire(keys("a"))
        #expect(machine.whenListening(keys("a"), 1) == .ready)
        machine.connected()
        #expect(machine.whenListening(keys("a"), 2) == .ready, "not up yet: the LISTEN comes with the resync")
        let first = settle(&machine)
        #expect(first.syncs == [.init(listen: keys("a"))])
        #expect(machine.isUp)
        _ = machine.acquire(keys("b"))
        #expect(machine.whenListening(keys("a", "b"), 3) == .wait)
        #expect(machine.whenListening(keys("a"), 4) == .ready)
        guard case .sync(let sync)? = machine.nextCommand(maxStatements: 1000) else {
            Issue.record("expected a LISTEN")
            return
        }
        #expect(sync.listen == keys("b"))
        #expect(machine.syncSucceeded(received: 0) == [3])
    }

    @Test("a channel acquired again while its UNLISTEN is in flight is LISTENed again before its waiter goes")
    func reacquiredDuringUnlisten() {
        var machine = ListenStateMachine<Int>()
        machine.connected()
        _ = machine.acquire(keys("a"))
        _ = settle(&machine)
        _ = machine.release(keys("a"))
        guard case .sync(let unlisten)? = machine.nextCommand(maxStatements: 1000) else {
            Issue.record("expected an UNLISTEN")
            return
        }
        #expect(unlisten.unlisten == keys("a"))
        _ = machine.acquire(keys("a"))
        #expect(machine.whenListening(keys("a"), 7) == .wait, "PostgreSQL still lists it, but not for long")
        #expect(
            machine.syncSucceeded(received: 0) == [], "the UNLISTEN went through: the waiter must wait for the LISTEN")
        let rest = settle(&machine)
        #expect(rest.syncs == [.init(listen: keys("a"))])
        #expect(rest.ready == [7])
    }

    @Test("a channel released and acquired again before the connection looked sends nothing and lets its waiter go")
    func settledWithoutCommand() {
        var machine = ListenStateMachine<Int>()
        machine.connected()
        _ = machine.acquire(keys("a"))
        _ = settle(&machine)
        _ = machine.release(keys("a"))
        _ = machine.acquire(keys("a"))
        #expect(machine.whenListening(keys("a"), 9) == .wait)
        let result = settle(&machine)
        #expect(result.syncs == [])
        #expect(result.ready == [9])
    }

    @Test("the database counts as up only once a new connection LISTENs everything held")
    func upAfterResync() {
        var machine = ListenStateMachine<Int>()
        _ = machine.acquire(keys("a", "b"))
        machine.connected()
        #expect(!machine.isUp)
        guard case .sync(let sync)? = machine.nextCommand(maxStatements: 1000) else {
            Issue.record("expected a LISTEN of both")
            return
        }
        #expect(Set(sync.listen) == Set(keys("a", "b")))
        #expect(machine.nextCommand(maxStatements: 1000) == nil, "one round trip at a time")
        _ = machine.syncSucceeded(received: 0)
        #expect(!machine.isUp)
        guard case .idle(let cameUp, _)? = machine.nextCommand(maxStatements: 1000) else {
            Issue.record("expected idle")
            return
        }
        #expect(cameUp)
        #expect(machine.isUp)
        #expect(machine.listeningCount == 2)
    }

    @Test("round trips carry at most maxStatements statements")
    func batchesAreBounded() {
        var machine = ListenStateMachine<Int>()
        machine.connected()
        _ = machine.acquire((0..<25).map { ChannelKey("c\($0)") })
        var sizes: [Int] = []
        while case .sync(let sync)? = machine.nextCommand(maxStatements: 10) {
            sizes.append(sync.listen.count)
            _ = machine.syncSucceeded(received: 0)
        }
        #expect(sizes == [10, 10, 5])
        #expect(machine.listeningCount == 25)
    }

    @Test("a lost connection lets every waiter go, forgets its LISTENs and resyncs everything held")
    func connectionLost() {
        var machine = ListenStateMachine<Int>()
        machine.connected()
        _ = machine.acquire(keys("a"))
        _ = settle(&machine)
        _ = machine.acquire(keys("b"))
        #expect(machine.whenListening(keys("b"), 5) == .wait)
        let lost = machine.connectionLost()
        #expect(lost.wasUp)
        #expect(lost.ready == [5])
        #expect(machine.listeningCount == 0)
        #expect(!machine.isUp)
        machine.connected()
        #expect(Set(settle(&machine).syncs.flatMap(\.listen)) == Set(keys("a", "b")))
    }

    @Test("names are compared by bytes: composed and decomposed é are two channels")
    func bytewiseNames() {
        var machine = ListenStateMachine<Int>()
        machine.connected()
        _ = machine.acquire(keys("caf\u{E9}"))
        _ = settle(&machine)
        #expect(machine.acquire(keys("cafe\u{301}")) == true)
        #expect(settle(&machine).syncs == [.init(listen: keys("cafe\u{301}"))])
        #expect(machine.listeningCount == 2)
    }
}
