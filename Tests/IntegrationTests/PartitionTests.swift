import BridgeTestSupport
import Foundation
import Logging
import PostgresWebSockets
import Synchronization
import Testing

/// A network partition between the server and PostgreSQL: the path is cut without closing
/// anything (no FIN, no RST), so only the server's own probes and timeouts can tell. The
/// server reaches its cluster through a `PostgresRelay` that cuts the listener's connection
/// or the notifier's alone; a `TestDatabase` beside the relay sees what PostgreSQL commits.
@Suite struct PartitionTests {
    static let listener = PostgresRelay.listenerApplication
    static let notifier = PostgresRelay.notifierApplication

    /// The listener's path is cut while sockets are open and a writer sends, then healed.
    /// Parameterized cases run in parallel, so the 60 s case costs the suite about a minute
    /// of wall time beside everything else.
    @Test(arguments: [5, 60])
    func listenerPathCutAndHealed(afterSeconds cutSeconds: Int) async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        let relay = try PostgresRelay.start(upstream: cluster)
        defer { relay.stop() }
        // Debug records too: the retries during the cut are logged there and only there.
        try await TestServer.with(databaseURI: relay.uri, { $0.logLevel = .debug }) { server in
            // Before the server shuts down, also when the test fails: nothing stays cut.
            defer { relay.stop() }
            let db = try TestDatabase(uri: cluster.uri)
            let (channel, other) = (uniqueChannel(), uniqueChannel())
            try await db.listen(channel)
            let readers = [
                try await server.connect(channel: channel, mode: "r"),
                try await server.connect(channel: channel, mode: "r"),
            ]
            let otherReader = try await server.connect(channel: other, mode: "r")
            let writer = PacedWriter(try await server.connect(channel: channel, mode: "w"))
            try await writer.waitUntilSent(20)

            let cutAt = ContinuousClock.now
            #expect(await relay.cut(application: Self.listener) == 1)
            let lost = try await step("the outage is noticed") {
                try await server.log.waitForRecord(with: [.database: "lost"], timeout: 15)
            }
            let lostSeenAt = ContinuousClock.now
            let noticedAfter = lostSeenAt - cutAt
            // Noticed by the probe, at the deadline the server names: 250 ms of silence, then
            // a probe that gets `listener-timeout` (750 ms), or longer while the database has
            // answered slowly (`AnswerDeadline`, which the whole suite on two cores can make
            // over a second). Not by TCP, which would take minutes, nor by a reconnect.
            let reason = try #require(lost[.error], "\(lost)")
            #expect(reason.hasPrefix("no answer from PostgreSQL for "), "\(lost)")
            let deadline = try #require(Self.deadline(in: reason), "\(reason)")
            #expect(deadline >= 0.75 && deadline <= 10, "\(reason)")
            let expected = 0.25 + deadline + patience(1)
            #expect(noticedAfter < .milliseconds(Int64(expected * 1000)), "noticed after \(noticedAfter): \(reason)")
            try await step("/health turns 503") {
                try await waitUntil(timeout: 5, "/health 503") { try await Self.health(server).status == 503 }
            }
            // The database is down for the server from here on: what the writer sends now
            // waits in the server's queue.
            let queuedFrom = writer.sent

            // The cut itself lasts `cutSeconds`: that is the scenario, not a wait for an event.
            try await Task.sleep(until: cutAt + .seconds(cutSeconds))
            #expect(try await Self.health(server).status == 503)
            #expect(server.log.records(with: [.database: "restored"]).isEmpty)
            let sentDuringCut = writer.sent
            let healAt = ContinuousClock.now
            await relay.heal(application: Self.listener)

            let restored = try await step("the database is back") {
                try await server.log.waitForRecord(with: [.database: "restored"], timeout: 30)
            }
            let outage = try #require(restored[.outageSeconds].flatMap(Double.init))
            // The server counts from its `lost` record, which came before the test saw it, to
            // its `restored` one, which came after the heal: at least what the test saw between
            // the two (less the rounding to hundredths).
            let seenDown = healAt - lostSeenAt
            #expect(outage >= seenDown.inSeconds - 0.01, "outage_seconds \(outage), seen down for \(seenDown)")
            try await step("/health turns 200") {
                try await waitUntil(timeout: 10, "/health 200") { try await Self.health(server).status == 200 }
            }
            #expect(Set(try await server.socketChannelsListened()) == [channel, other], "LISTENs restored")
            try await db.notify(other, "after the heal")
            #expect(try await otherReader.nextText() == "after the heal")
            try await writer.waitUntilSent(sentDuringCut + 20)
            let total = try await writer.stop()

            // PostgreSQL committed every message once, in order: nothing was lost in the server.
            let committed = try await step("PostgreSQL got every message") {
                try await db.notifications(count: total, timeout: 60).map { try Self.payload($0.payload) }
            }
            #expect(committed == (0..<total).map { "m-\($0)" })
            // The sockets stayed open and got everything sent once the server knew the
            // database was down, in order. What the lanes committed during the second
            // before that is what PostgreSQL never delivers to a disconnected listener.
            for reader in readers {
                let got = try await step("a reader got the messages") {
                    try await Self.indices(from: reader, through: total - 1)
                }
                Self.expectInOrderWithOneGap(got, total: total, complete: queuedFrom)
            }
            let health = try await Self.health(server)
            #expect(try JSONParser.parse(health.body)["connections"] == .number("4"), "\(health.body)")

            // One warning for the outage, one notice at its end, nothing per retry.
            let loud = server.log.records.filter { $0.level >= .notice && $0[.database] != nil }
            #expect(loud.map(\.message) == ["database connection lost", "database connection restored"], "\(loud)")
            #expect(server.log.records.filter { $0.level >= .warning }.count == 1)
            let retries = server.log.records.filter { $0.message == "database still unavailable" }.count
            let attempts = relay.stats(Self.listener).opened
            if cutSeconds >= 60 {
                // Each attempt waits 5 s (connect_timeout) in the cut, then backs off.
                #expect(retries >= 4, "\(retries) retries logged at debug")
                #expect(attempts >= 5, "\(attempts) connections through the relay")
            }
            #expect(retries <= attempts)
        }
    }

    /// The seconds in "... (deadline 0.75 s)" of the listener's `lost` record.
    static func deadline(in reason: String) -> Double? {
        guard let open = reason.range(of: "(deadline "), let end = reason.range(of: " s)", range: open.upperBound..<reason.endIndex)
        else { return nil }
        return Double(reason[open.upperBound..<end.lowerBound])
    }

    /// The notifier's path alone is cut while a writer sends: the listener sees nothing
    /// wrong, the lane's batch gets no answer, and after 15 s (`Notifier.resultTimeout`) the lane
    /// gives its connection up (with a reset, so that what it sent into the cut can never
    /// reach PostgreSQL after the heal) and sends the batch again on a new one.
    @Test func notifierPathCutRetriesTheBatch() async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        let relay = try PostgresRelay.start(upstream: cluster)
        defer { relay.stop() }
        try await TestServer.with(databaseURI: relay.uri, { $0.notifier.poolSize = 1 }) { server in
            defer { relay.stop() }
            let db = try TestDatabase(uri: cluster.uri)
            let channel = uniqueChannel()
            try await db.listen(channel)
            let reader = try await server.connect(channel: channel, mode: "r")
            let writer = PacedWriter(try await server.connect(channel: channel, mode: "w"))
            try await writer.waitUntilSent(20)
            try await waitUntil(timeout: 10, "the lane's connection") { relay.stats(Self.notifier).open == 1 }

            let cutAt = ContinuousClock.now
            #expect(await relay.cut(application: Self.notifier) == 1)
            let retry = try await step("the lane gives the batch up") {
                try await server.log.waitForRecord(with: [.lane: "0"], timeout: 40)
            }
            let detectedAfter = ContinuousClock.now - cutAt
            #expect(retry.message == "NOTIFY batch failed, will retry")
            #expect(retry[.error]?.contains("no answer from PostgreSQL") == true, "\(retry)")
            // The lane waits 15 s for an answer (Notifier.resultTimeout).
            #expect(detectedAfter < .milliseconds(Int64(patience(20) * 1000)), "detected after \(detectedAfter)")
            // The listener's path is fine: the database never counted as down.
            #expect(try await Self.health(server).status == 200)
            await relay.heal(application: Self.notifier)
            let sentBeforeHeal = writer.sent
            try await writer.waitUntilSent(sentBeforeHeal + 20)
            let total = try await writer.stop()

            // The connection given up on ends for good (the relay dropped what its client had
            // sent into the cut), so whatever it carried is committed by now or never will be.
            try await waitUntil(timeout: 20, "the lane's old connection to end") {
                relay.stats(Self.notifier).open == 1
            }
            let stats = relay.stats(Self.notifier)
            #expect(stats.resetWhileCut == 1, "the lane reset the connection it gave up on: \(stats)")
            try await db.notify(channel, "marker")
            // A batch whose answer was lost in the cut may have been committed before it was
            // sent again: the documented at-least-once case. Nothing else may repeat.
            let atLeastOnce = stats.answersLost > 0
            var committed: [Int] = []
            while true {
                let payload = try await db.nextNotification(timeout: 30).payload
                if payload == "marker" { break }
                committed.append(try Self.index(try Self.payload(payload)))
            }
            Self.expectEveryMessage(committed, total: total, duplicatesAllowed: atLeastOnce)
            var delivered: [Int] = []
            while true {
                let text = try await reader.nextText(timeout: 30)
                if text == "marker" { break }
                delivered.append(try Self.index(try Self.payload(text)))
            }
            Self.expectEveryMessage(delivered, total: total, duplicatesAllowed: atLeastOnce)
            #expect(server.log.records(with: [.database: "lost"]).isEmpty)
            #expect(server.log.records.filter { $0.level >= .warning }.count == 1, "one warning for the one retry")
        }
    }

    /// After a partition, a stateful firewall may keep dropping the packets of the old
    /// connections while new ones pass. The listener reconnects at once; the lane, whose
    /// connection sat idle through the outage, then sends what queued meanwhile (4 MiB, more
    /// than the cut path holds) into its dead connection. The send itself cannot complete:
    /// it must still be given up after 15 s, and the messages sent on a new connection.
    @Test func largeBatchIntoADeadConnectionIsRetried() async throws {
        let cluster = try await TemporaryPostgres.start()
        defer { cluster.stop() }
        let relay = try PostgresRelay.start(upstream: cluster)
        defer { relay.stop() }
        try await TestServer.with(databaseURI: relay.uri, { $0.notifier.poolSize = 1 }) { server in
            // Before the server shuts down: a lane stuck in the cut would hold its shutdown.
            defer { relay.stop() }
            let db = try TestDatabase(uri: cluster.uri)
            let channel = uniqueChannel()
            try await db.listen(channel)
            let writer = try await server.connect(channel: channel, mode: "w")
            try await writer.send(text: "m-0")
            #expect(try Self.payload(try await db.nextNotification().payload) == "m-0")
            // PostgreSQL may notify listeners before the lane reads its answer: a cut before
            // then would leave m-0 queued for a retry, and the count below one too high.
            try await waitUntil(timeout: 10, "the lane to see m-0 committed") { server.bridge.queuedMessages == 0 }

            #expect(await relay.cut(application: Self.listener) == 1)
            #expect(await relay.cut(application: Self.notifier, newConnectionsToo: false) == 1)
            try await server.log.waitForRecord(with: [.database: "lost"], timeout: 15)
            try await waitUntil(timeout: 5, "/health 503") { try await Self.health(server).status == 503 }
            let count = 700
            let filler = String(repeating: "x", count: 6000)
            try await writer.send(texts: (1...count).map { "m-\($0) \(filler)" })
            var queued = 0
            do {
                try await waitUntil(timeout: patience(20), "the messages to queue") {
                    queued = server.bridge.queuedMessages
                    return queued == count
                }
            } catch {
                let log = server.log.records.suffix(20).map(\.description).joined(separator: "\n")
                Issue.record("\(queued) of \(count) queued; the server's last lines:\n\(log)")
                throw error
            }
            await relay.heal(application: Self.listener)
            try await server.log.waitForRecord(with: [.database: "restored"], timeout: 30)

            let retry = try await step("the lane gives the stuck batch up") {
                try await server.log.waitForRecord(with: [.lane: "0"], timeout: 40)
            }
            #expect(retry[.error]?.contains("no answer from PostgreSQL") == true, "\(retry)")
            let committed = try await step("PostgreSQL got every message") {
                try await db.notifications(count: count, timeout: 60).map { try Self.payload($0.payload) }
            }
            #expect(committed.map { $0.prefix { $0 != " " } } == (1...count).map { "m-\($0)"[...] })
            await relay.heal(application: Self.notifier)
            try await waitUntil(timeout: 20, "the lane's old connection to end") {
                relay.stats(Self.notifier).open == 1
            }
            #expect(relay.stats(Self.notifier).resetWhileCut == 1)
            try await db.notify(channel, "marker")
            #expect(try await db.nextNotification().payload == "marker", "nothing sent twice")
        }
    }

    // MARK: - Helpers

    static func health(_ server: TestServer) async throws -> HTTPGet.Response {
        try await HTTPGet.fetch(port: server.port, path: "/health")
    }

    static func payload(_ envelope: String) throws -> String {
        try #require(try JSONParser.parse(envelope)["payload"]?.stringValue)
    }

    static func index(_ payload: String) throws -> Int {
        try #require(payload.hasPrefix("m-") ? Int(payload.dropFirst(2)) : nil, "\(payload)")
    }

    /// The writer's message numbers a reader gets, up to `last`.
    static func indices(from reader: WebSocketClient, through last: Int) async throws -> [Int] {
        var got: [Int] = []
        while got.last != last {
            got.append(try index(try payload(try await reader.nextText(timeout: 30))))
        }
        return got
    }

    /// In order, no duplicates, everything from `complete` on; what is missing before it is
    /// one run (the messages committed while the listener was cut off and not yet counted out).
    static func expectInOrderWithOneGap(
        _ got: [Int], total: Int, complete: Int, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(zip(got, got.dropFirst()).allSatisfy { $0 < $1 }, "in order, once each", sourceLocation: sourceLocation)
        let missing = Set(0..<total).subtracting(got).sorted()
        #expect(missing.allSatisfy { $0 < complete }, "missing \(missing)", sourceLocation: sourceLocation)
        if let first = missing.first, let last = missing.last {
            #expect(last - first + 1 == missing.count, "one gap: \(missing)", sourceLocation: sourceLocation)
        }
    }

    /// Every message 0..<total, each first seen in order; repeats only if allowed, and
    /// then only of one batch (one run of consecutive messages).
    static func expectEveryMessage(
        _ got: [Int], total: Int, duplicatesAllowed: Bool, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        var seen = Set<Int>()
        var firsts: [Int] = []
        var repeated: [Int] = []
        for index in got {
            if seen.insert(index).inserted { firsts.append(index) } else { repeated.append(index) }
        }
        #expect(firsts == Array(0..<total), "every message, in order", sourceLocation: sourceLocation)
        if duplicatesAllowed {
            let run = Set(repeated).sorted()
            if let first = run.first, let last = run.last {
                #expect(last - first + 1 == run.count, "repeats of one batch: \(run)", sourceLocation: sourceLocation)
            }
        } else {
            #expect(repeated.isEmpty, "repeated \(repeated)", sourceLocation: sourceLocation)
        }
    }
}

/// A writer socket that sends `m-0`, `m-1`, ... every 25 ms until stopped: a steady load
/// across the outage (the pace is the load, not a synchronization).
final class PacedWriter: Sendable {
    private final class Progress: Sendable {
        let sent = Atomic<Int>(0)
        let stopping = Atomic<Bool>(false)
    }

    private let progress: Progress
    private let task: Task<Void, any Error>

    init(_ socket: WebSocketClient, every interval: Duration = .milliseconds(25)) {
        let progress = Progress()
        self.progress = progress
        task = Task {
            while !progress.stopping.load(ordering: .relaxed) {
                let next = progress.sent.load(ordering: .relaxed)
                try await socket.send(text: "m-\(next)")
                progress.sent.store(next + 1, ordering: .relaxed)
                try await Task.sleep(for: interval)
            }
        }
    }

    deinit {
        progress.stopping.store(true, ordering: .relaxed)
    }

    /// Messages sent so far.
    var sent: Int { progress.sent.load(ordering: .relaxed) }

    func waitUntilSent(_ count: Int) async throws {
        try await waitUntil(timeout: 30, "\(count) messages sent") { self.sent >= count }
    }

    /// Stops sending; returns how many messages were sent (rethrows a failed send).
    func stop() async throws -> Int {
        progress.stopping.store(true, ordering: .relaxed)
        try await task.value
        return sent
    }
}
