import BridgeTestSupport
import NIOCore
import NIOPosix
import PostgresWebSockets
import Synchronization

/// The load sockets of one process: opens them with a bounded number of handshakes in
/// flight, waits for a phase's frames, checks every socket's count and order, closes them.
/// Its state lives on its event loops (`LoopStats`); this type only schedules work there.
final class SocketFleet: Sendable {
    let spec: FleetSpec
    private let group: MultiThreadedEventLoopGroup
    private let loops: [NIOLoopBoundBox<LoopStats>]
    private let tokens: [String]
    private let isShutDown = Atomic<Bool>(false)

    /// Mints the tokens up front, so opening measures only the handshakes.
    init(spec: FleetSpec) {
        self.spec = spec
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, spec.threads))
        loops = group.makeIterator().map { NIOLoopBoundBox.makeBoxSendingValue(LoopStats(), eventLoop: $0) }
        if let signing = spec.signingKey {
            // Never HS256 tokens in place of the signed ones: the rows would measure refusals.
            let key: TestSigningKey
            do {
                key = try TestSigningKey(pem: signing.privateKeyPEM, kind: signing.kind, kid: signing.kid)
            } catch {
                fatalError("cannot load the \(signing.kind.rawValue) signing key: \(error)")
            }
            tokens = (0..<spec.count).map { offset in
                let index = spec.firstIndex + offset
                return key.mint(
                    claimsJSON:
                        #"{"mode":"\#(spec.mode)","channel":"\#(spec.channelName(index: index))","sid":\#(index)}"#)
            }
        } else if spec.tokenPerSocket {
            tokens = (0..<spec.count).map { offset in
                let index = spec.firstIndex + offset
                return TestTokens.mint(
                    mode: spec.mode, channel: spec.channelName(index: index), extra: [("sid", .number(String(index)))])
            }
        } else {
            let shared = TestTokens.mint(mode: spec.mode, channel: spec.distinctChannels ? nil : spec.channel)
            tokens = Array(repeating: shared, count: spec.count)
        }
    }

    // MARK: - Opening

    func open() async -> OpenReport {
        var report = OpenReport(requested: spec.count)
        report.startMicros = Clock.wallMicros()
        await withTaskGroup(of: Result<(start: Int64, end: Int64), LoadHandler.HandshakeFailure>.self) { tasks in
            var next = 0
            func startNext() {
                let offset = next
                next += 1
                tasks.addTask { await self.openOne(offset: offset) }
            }
            while next < min(spec.count, max(1, spec.concurrency)) { startNext() }
            while let result = await tasks.next() {
                switch result {
                case .success(let times):
                    report.opened += 1
                    report.endMicros = max(report.endMicros, times.end)
                    report.handshake.record(times.end - times.start)
                case .failure(let failure):
                    report.failed += 1
                    if report.failureSamples.count < 10 { report.failureSamples.append(failure.description) }
                }
                if next < spec.count { startNext() }
            }
        }
        return report
    }

    private func openOne(offset: Int) async -> Result<(start: Int64, end: Int64), LoadHandler.HandshakeFailure> {
        let index = spec.firstIndex + offset
        let box = loops[offset % loops.count]
        let loop = box.eventLoop
        let promise = loop.makePromise(of: Int64.self)
        let spec = self.spec
        var path = "/\(spec.channelName(index: index))/\(tokens[offset])"
        var subprotocols: String? = spec.structured ? "pgws.v1" : nil
        var openingFrame: String? = nil
        if spec.structured, let since = spec.resumeSince {
            path = "/"
            subprotocols = "pgws.v1, bearer.\(tokens[offset])"
            openingFrame = #"{"type":"subscribe","channel":"\#(spec.channelName(index: index))","since":"\#(since)"}"#
        }
        let (finalPath, finalSubprotocols, finalOpeningFrame) = (path, subprotocols, openingFrame)
        let start = Clock.wallMicros()
        do {
            _ = try await ClientBootstrap(group: loop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(30))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handler = LoadHandler(
                            index: index, host: spec.host, port: spec.port, path: finalPath, stats: box.value,
                            handshake: promise, seqFromIndex: spec.seqFromIndex, messageSize: spec.messageSize,
                            subprotocols: finalSubprotocols, openingFrame: finalOpeningFrame)
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(host: spec.host, port: spec.port).get()
            loop.scheduleTask(in: .seconds(30)) {
                promise.fail(LoadHandler.HandshakeFailure(description: "no 101 within 30 s"))
            }
            let end = try await promise.futureResult.get()
            return .success((start, end))
        } catch let failure as LoadHandler.HandshakeFailure {
            return .failure(failure)
        } catch {
            promise.fail(error)
            return .failure(LoadHandler.HandshakeFailure(description: "connect: \(error)"))
        }
    }

    // MARK: - Phases

    private func onEveryLoop<T: Sendable>(_ body: @escaping @Sendable (LoopStats) -> T) async -> [T] {
        var results: [T] = []
        guard !isShutDown.load(ordering: .acquiring) else { return results }
        for box in loops {
            if let value = try? await box.eventLoop.submit({ body(box.value) }).get() {
                results.append(value)
            }
        }
        return results
    }

    /// Waits until every open socket has `expected` frames of `phase` (or no frame of it
    /// arrived for `stallSeconds`, or sockets were lost), then checks each socket.
    func collect(phase: Int, expected: Int, stallSeconds: Double) async -> PhaseReport {
        let sockets = await onEveryLoop { $0.sockets.count }.reduce(0, +)
        let target = expected * sockets
        var lastTotal = -1
        var lastProgress = Clock.monotonic()
        while true {
            let counts = await onEveryLoop { ($0.framesReceived(phase: phase), $0.openSockets) }
            let total = counts.reduce(0) { $0 + $1.0 }
            let open = counts.reduce(0) { $0 + $1.1 }
            if total >= target { break }
            let now = Clock.monotonic()
            if total != lastTotal {
                lastTotal = total
                lastProgress = now
            } else if now - lastProgress > (open < sockets ? min(2, stallSeconds) : stallSeconds) {
                break
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
        var report = PhaseReport(phase: phase, expectedPerSocket: expected)
        var first = true
        for part in await onEveryLoop({ $0.report(phase: phase, expected: expected) }) {
            if first {
                report = part
                first = false
            } else {
                report.merge(part)
            }
        }
        return report
    }

    /// Writers: every socket sends `count` messages as fast as it can (within `window`).
    func startWriting(count: Int, window: WriterWindow? = nil) async {
        _ = await onEveryLoop { stats in
            for socket in stats.sockets { socket.startWriting(total: count, window: window) }
        }
    }

    /// Sockets the server closed or dropped so far, with examples.
    func losses() async -> (count: Int, samples: [String]) {
        let parts = await onEveryLoop { ($0.closedByServer + $0.disconnects + $0.unparsable, $0.problemSamples) }
        return (parts.reduce(0) { $0 + $1.0 }, parts.flatMap(\.1))
    }

    // MARK: - Closing

    /// Sends a close frame on every socket and waits until the server dropped them all.
    func close(timeout: Double = 30) async -> CloseReport {
        var report = CloseReport()
        report.startMicros = Clock.wallMicros()
        let total = await onEveryLoop { stats in
            for socket in stats.sockets { socket.closeGracefully() }
            return stats.sockets.count
        }.reduce(0, +)
        let deadline = Clock.monotonic() + timeout
        var open = total
        while Clock.monotonic() < deadline {
            open = await onEveryLoop { $0.openSockets }.reduce(0, +)
            if open <= 0 { break }
            try? await Task.sleep(for: .milliseconds(5))
        }
        report.endMicros = Clock.wallMicros()
        report.closed = total - open
        report.stillOpen = open
        return report
    }

    /// Drops whatever is still connected and stops the event loops. Once; later calls and
    /// later requests to the loops do nothing.
    func shutdown() async {
        _ = await onEveryLoop { stats in
            for socket in stats.sockets { socket.abort() }
        }
        guard !isShutDown.exchange(true, ordering: .acquiringAndReleasing) else { return }
        try? await group.shutdownGracefully()
    }
}
