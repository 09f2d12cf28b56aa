import Testing

@testable import PostgresWebSockets

private let orders = ChannelKey("orders")

private func signal(_ streams: inout DurableStreams, _ text: String) -> [DurableStreams.Output] {
    Array(text.utf8).withUnsafeBytes { streams.signal(orders, $0) }
}

private func message(_ offset: UInt64, _ payload: String) -> DurableStreams.Output {
    .message(orders, offset: offset, payload: Array(payload.utf8))
}

private func rows(_ offsets: ClosedRange<UInt64>) -> [(offset: UInt64, payload: [UInt8])] {
    offsets.map { ($0, Array("m\($0)".utf8)) }
}

/// A stream followed from offset `last`.
private func following(from last: UInt64) -> DurableStreams {
    var streams = DurableStreams()
    streams.loaded([orders])
    streams.startFollowing(orders)
    _ = streams.baseline(orders, newest: last)
    return streams
}

@Suite("DurableStreams")
struct DurableStreamsTests {
    @Test("a new stream starts at its baseline: signals that arrived before it wait, older ones are dropped")
    func baselineStartsAStream() {
        var streams = DurableStreams()
        streams.loaded([orders])
        streams.startFollowing(orders)
        #expect(signal(&streams, "4:m4").isEmpty, "held until the baseline")
        #expect(signal(&streams, "6:m6").isEmpty)
        let output = streams.baseline(orders, newest: 5)
        #expect(output == [.durability(orders, isDurable: true, last: 5), message(6, "m6")])
        #expect(signal(&streams, "7:m7") == [message(7, "m7")])
    }

    @Test("the next offset is handed on; a repeated one is dropped")
    func inOrder() {
        var streams = following(from: 0)
        #expect(signal(&streams, "1:a:b") == [message(1, "a:b")], "only the first colon separates")
        #expect(signal(&streams, "1:a:b").isEmpty)
        #expect(signal(&streams, "2:") == [message(2, "")])
        #expect(signal(&streams, "x:oops").isEmpty, "not an offset")
    }

    @Test("a gap is read from the table while later signals wait, then they follow in order")
    func gapIsRead() {
        var streams = following(from: 3)
        #expect(signal(&streams, "6:m6") == [.read(orders, after: 3, through: 6)])
        #expect(signal(&streams, "7:m7").isEmpty)
        #expect(signal(&streams, "8").isEmpty, "a large one waits too")
        let output = streams.read(orders, rows: rows(4...6), complete: true)
        #expect(
            output == [
                message(4, "m4"), message(5, "m5"), message(6, "m6"), message(7, "m7"),
                .read(orders, after: 7, through: 8),
            ])
        #expect(streams.read(orders, rows: rows(8...8), complete: true) == [message(8, "m8")])
        #expect(signal(&streams, "9:m9") == [message(9, "m9")])
    }

    @Test("a signal without its payload (over NOTIFY's limit) is read from the table")
    func largePayload() {
        var streams = following(from: 0)
        #expect(signal(&streams, "1") == [.read(orders, after: 0, through: 1)])
        #expect(streams.read(orders, rows: [(1, Array("big".utf8))], complete: true) == [message(1, "big")])
    }

    @Test("a read in pages goes on after its last row")
    func pagedRead() {
        var streams = following(from: 0)
        #expect(signal(&streams, "5:m5") == [.read(orders, after: 0, through: 5)])
        #expect(
            streams.read(orders, rows: rows(1...2), complete: false) == [
                message(1, "m1"), message(2, "m2"), .read(orders, after: 2, through: 5),
            ])
        #expect(
            streams.read(orders, rows: rows(3...5), complete: true) == [
                message(3, "m3"), message(4, "m4"), message(5, "m5"),
            ])
    }

    @Test("what retention removed is skipped: the stream goes on after the read's end")
    func prunedRows() {
        var streams = following(from: 0)
        _ = signal(&streams, "9:m9")
        #expect(
            streams.read(orders, rows: rows(7...9), complete: true) == [
                message(7, "m7"), message(8, "m8"), message(9, "m9"),
            ])
        #expect(signal(&streams, "10:m10") == [message(10, "m10")])
    }

    @Test("after a lost connection the baseline reads what was missed, and nothing is repeated")
    func reconnectCatchesUp() {
        var streams = following(from: 0)
        _ = signal(&streams, "1:m1")
        _ = signal(&streams, "2:m2")
        streams.connectionLost()
        streams.startFollowing(orders)
        #expect(signal(&streams, "6:m6") == [.read(orders, after: 2, through: 6)], "a signal before the baseline")
        #expect(streams.baseline(orders, newest: 5).isEmpty, "a read is already under way")
        #expect(streams.read(orders, rows: rows(3...6), complete: true) == (3...6).map { message($0, "m\($0)") })

        var quiet = following(from: 0)
        _ = signal(&quiet, "1:m1")
        quiet.connectionLost()
        quiet.startFollowing(orders)
        #expect(quiet.baseline(orders, newest: 4) == [.read(orders, after: 1, through: 4)])
        #expect(quiet.read(orders, rows: rows(2...4), complete: true) == (2...4).map { message($0, "m\($0)") })
    }

    @Test("a channel made durable while held starts after the offset the change named")
    func madeDurable() {
        var streams = DurableStreams()
        let change = streams.controlSignal("durable 12 orders")
        #expect(change?.channel == orders && change?.isDurable == true && change?.last == 12)
        #expect(streams.durable == [orders])
        streams.startFollowing(orders)
        #expect(streams.resume(orders, after: 12) == [.durability(orders, isDurable: true, last: 12)])
        #expect(streams.baseline(orders, newest: 14) == [.read(orders, after: 12, through: 14)])
        #expect(streams.controlSignal("ephemeral 0 orders")?.isDurable == false)
        #expect(streams.durable.isEmpty)
        #expect(streams.stopFollowing(orders) == [.durability(orders, isDurable: false, last: 0)])
        #expect(signal(&streams, "15:m15").isEmpty, "no longer followed")
        #expect(streams.controlSignal("durable x orders") == nil)
        #expect(streams.controlSignal("whatever 1 orders") == nil)
    }

    @Test("the signal channel's name is the one pgws.signal_channel computes")
    func signalChannelName() {
        // SELECT pgws.signal_channel('orders') on PostgreSQL 15.
        #expect(DurableStreams.signalChannel(of: orders) == "pgws:1c168adb00d208e42f93314529f1fa9c")
    }
}
