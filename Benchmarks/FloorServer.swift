import BridgeTestSupport
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What the floor server did for one stream.
struct FloorSendReport: Sendable {
    /// Wall clock of the first frame's stamp and after the last write, frames sent.
    var sent = SendReport()
    var sockets = 0
    /// write(2) calls that took a whole frame at once: the expected case.
    var writes = 0
    /// Frames the kernel took only in part, or not at all (EAGAIN), or that had to wait behind
    /// such a frame: each is queued and flushed before the socket's next frame.
    var shortWrites = 0
    var wouldBlock = 0
    var queued = 0
    /// Frames lost to a write error (the socket is then closed), plus sockets whose queued
    /// bytes were still unwritten 10 s after the last tick.
    var failed = 0
    /// The writing thread's own CPU over the stream (getrusage RUSAGE_THREAD), seconds.
    var userSeconds = 0.0
    var systemSeconds = 0.0
    /// Per frame: the stamp to the return of the last socket's write(2), µs.
    var pass = Histogram()

    var frames: Int { sent.notifies }
    var cpuSeconds: Double { userSeconds + systemSeconds }
}

/// The physical floor of the fan-out latency row: an ideal server inside the bench process
/// that does nothing but one write(2) of a ready frame per socket. It accepts the load
/// client's sockets on 127.0.0.1 (any path, any token), answers the upgrade with a correct
/// 101, keeps the sockets non-blocking with TCP_NODELAY like the real server, and sends a
/// stream of the payloads the NOTIFY sender would send: per tick one unmasked text frame,
/// stamped and built once, then written to every socket in a tight loop. Plain POSIX calls
/// (socket, accept, poll, read, write) on one thread of its own; no PostgreSQL, no event loop.
final class FloorServer: Sendable {
    enum Request: Sendable {
        case stream(NotifyStream, CheckedContinuation<FloorSendReport, any Error>)
        case stop(CheckedContinuation<Void, Never>)
    }

    private struct Inbox {
        var requests: [Request] = []
        var stopped = false
    }

    let port: Int
    fileprivate let listener: Int32
    fileprivate let wakeRead: Int32
    private let wakeWrite: Int32
    private let inbox = Mutex(Inbox())

    /// Listens on 127.0.0.1 and a kernel-chosen port and starts the server's thread.
    static func start() throws -> FloorServer {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchFailure("floor: socket() failed: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && listen(fd, 4096) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        var pipeFDs: [Int32] = [-1, -1]
        guard bound, pipe(&pipeFDs) == 0 else {
            let failure = errno
            close(fd)
            throw BenchFailure("floor: cannot listen on 127.0.0.1: errno \(failure)")
        }
        for descriptor in [fd, pipeFDs[0]] { makeNonBlocking(descriptor) }
        let server = FloorServer(
            port: Int(UInt16(bigEndian: address.sin_port)), listener: fd, wakeRead: pipeFDs[0], wakeWrite: pipeFDs[1])
        let thread = Thread { FloorLoop(server: server).run() }
        thread.name = "bench-floor"
        thread.start()
        return server
    }

    private init(port: Int, listener: Int32, wakeRead: Int32, wakeWrite: Int32) {
        self.port = port
        self.listener = listener
        self.wakeRead = wakeRead
        self.wakeWrite = wakeWrite
    }

    /// Sends `stream` to every open socket, on the server's thread: `.rate` paced like the
    /// NOTIFY sender, any other kind back to back.
    func send(_ stream: NotifyStream) async throws -> FloorSendReport {
        try await withCheckedThrowingContinuation { continuation in
            post(.stream(stream, continuation))
        }
    }

    /// Closes every socket and the listener and ends the thread.
    func stop() async {
        await withCheckedContinuation { continuation in
            post(.stop(continuation))
        }
        close(listener)
        close(wakeRead)
        close(wakeWrite)
    }

    private func post(_ request: Request) {
        let accepted = inbox.withLock { inbox in
            guard !inbox.stopped else { return false }
            inbox.requests.append(request)
            return true
        }
        guard accepted else { return Self.refuse(request) }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    /// Called on the server's thread.
    fileprivate func takeRequests(stopping: Bool = false) -> [Request] {
        inbox.withLock { inbox in
            if stopping { inbox.stopped = true }
            defer { inbox.requests = [] }
            return inbox.requests
        }
    }

    fileprivate static func refuse(_ request: Request) {
        switch request {
        case .stream(_, let continuation): continuation.resume(throwing: BenchFailure("the floor server has stopped"))
        case .stop(let continuation): continuation.resume()
        }
    }

    fileprivate static func makeNonBlocking(_ fd: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }
}

/// The server's thread and its sockets; touched by that thread only.
private final class FloorLoop {
    final class Connection {
        let fd: Int32
        var open = false
        var closed = false
        /// Bytes read and not yet used: the request head, then client frames.
        var input: [UInt8] = []
        /// Bytes the kernel did not take yet; written before anything else on this socket.
        var pending: [UInt8] = []

        init(fd: Int32) { self.fd = fd }
    }

    enum Outcome { case whole, short, wouldBlock, queued, failed }

    private let server: FloorServer
    private var connections: [Connection] = []
    private var readBuffer = [UInt8](repeating: 0, count: 4096)
    /// RUSAGE_THREAD, a GNU extension the Glibc module does not name.
    private static let rusageThread = __rusage_who_t(1)
    private static let closeFrame: [UInt8] = [0x88, 0x02, 0x03, 0xE8]

    init(server: FloorServer) {
        self.server = server
    }

    func run() {
        var fds: [pollfd] = []
        loop: while true {
            fds.removeAll(keepingCapacity: true)
            fds.append(pollfd(fd: server.wakeRead, events: Int16(POLLIN), revents: 0))
            fds.append(pollfd(fd: server.listener, events: Int16(POLLIN), revents: 0))
            for connection in connections {
                let events = POLLIN | (connection.pending.isEmpty ? 0 : POLLOUT)
                fds.append(pollfd(fd: connection.fd, events: Int16(events), revents: 0))
            }
            let ready = poll(&fds, nfds_t(fds.count), -1)
            if ready < 0 {
                if errno == EINTR { continue }
                FileHandle.standardError.write(Data("floor: poll failed: errno \(errno)\n".utf8))
                break loop
            }
            let polled = connections.count
            for index in 0..<polled where fds[index + 2].revents != 0 {
                service(connections[index], events: fds[index + 2].revents)
            }
            if fds[1].revents != 0 { acceptAll() }
            if polled > 0 { connections.removeAll { $0.closed } }
            if fds[0].revents != 0 {
                while read(server.wakeRead, &readBuffer, readBuffer.count) > 0 {}
                let requests = server.takeRequests()
                for (index, request) in requests.enumerated() {
                    switch request {
                    case .stream(let stream, let continuation):
                        continuation.resume(returning: send(stream))
                        connections.removeAll { $0.closed }
                    case .stop(let continuation):
                        shutDown()
                        for later in requests[(index + 1)...] { FloorServer.refuse(later) }
                        continuation.resume()
                        break loop
                    }
                }
            }
        }
        shutDown()
        for request in server.takeRequests(stopping: true) { FloorServer.refuse(request) }
    }

    private func shutDown() {
        for connection in connections where !connection.closed { drop(connection) }
        connections = []
    }

    // MARK: - Sockets

    private func acceptAll() {
        while true {
            let fd = accept(server.listener, nil, nil)
            if fd < 0 {
                if errno == EINTR { continue }
                return  // EAGAIN: no more waiting (or a transient error: the client retries)
            }
            FloorServer.makeNonBlocking(fd)
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            connections.append(Connection(fd: fd))
        }
    }

    private func service(_ connection: Connection, events: Int16) {
        if events & Int16(POLLOUT) != 0 && !connection.pending.isEmpty { flush(connection) }
        guard !connection.closed else { return }
        while true {
            let n = read(connection.fd, &readBuffer, readBuffer.count)
            if n > 0 {
                connection.input += readBuffer[0..<n]
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            drop(connection)  // EOF or error
            return
        }
        if !connection.open { answerUpgrade(connection) }
        if connection.open { readFrames(connection) }
    }

    /// The HTTP upgrade: 101 with Sec-WebSocket-Accept for any path; 400 without a key.
    private func answerUpgrade(_ connection: Connection) {
        guard let end = connection.input.firstRange(of: [13, 10, 13, 10]) else {
            if connection.input.count > 16 * 1024 { drop(connection) }
            return
        }
        let head = String(decoding: connection.input[..<end.lowerBound], as: UTF8.self)
        connection.input.removeSubrange(..<end.upperBound)
        let lines = head.split(separator: "\r\n")
        let key = lines.dropFirst().first { $0.lowercased().hasPrefix("sec-websocket-key:") }
            .map { $0.dropFirst("sec-websocket-key:".count).trimmingCharacters(in: .whitespaces) }
        guard lines.first?.hasPrefix("GET ") == true, let key, !key.isEmpty else {
            _ = enqueue(
                Array("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".utf8), to: connection
            )
            drop(connection)
            return
        }
        let response =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Accept: \(WebSocketClient.accept(for: key))\r\n\r\n"
        connection.open = true
        _ = enqueue(Array(response.utf8), to: connection)
    }

    /// Client frames after the upgrade: a close frame is echoed and the socket closed; pongs
    /// and anything else are dropped.
    private func readFrames(_ connection: Connection) {
        var offset = 0
        let input = connection.input
        while input.count - offset >= 2 {
            let opcode = input[offset] & 0x0F
            var length = Int(input[offset + 1] & 0x7F)
            var header = 2
            if length == 126 {
                guard input.count - offset >= 4 else { break }
                length = Int(input[offset + 2]) << 8 | Int(input[offset + 3])
                header = 4
            } else if length == 127 {
                guard input.count - offset >= 10 else { break }
                length = input[(offset + 2)..<(offset + 10)].reduce(0) { $0 << 8 | Int($1) }
                header = 10
            }
            if input[offset + 1] & 0x80 != 0 { header += 4 }
            guard input.count - offset >= header + length else { break }
            offset += header + length
            if opcode == 0x8 {
                _ = enqueue(Self.closeFrame, to: connection)
                drop(connection)
                return
            }
        }
        connection.input.removeFirst(offset)
    }

    /// Writes `bytes` after whatever is still pending on the socket; keeps what the kernel did
    /// not take.
    private func enqueue(_ bytes: [UInt8], to connection: Connection) -> Outcome {
        bytes.withUnsafeBytes { deliver($0, to: connection) }
    }

    @inline(__always)
    private func deliver(_ bytes: UnsafeRawBufferPointer, to connection: Connection) -> Outcome {
        guard connection.pending.isEmpty else {
            connection.pending += bytes
            flush(connection)
            return .queued
        }
        var n = write(connection.fd, bytes.baseAddress, bytes.count)
        while n < 0 && errno == EINTR { n = write(connection.fd, bytes.baseAddress, bytes.count) }
        if n == bytes.count { return .whole }
        if n >= 0 {
            connection.pending += bytes[n...]
            return .short
        }
        if errno == EAGAIN || errno == EWOULDBLOCK {
            connection.pending += bytes
            return .wouldBlock
        }
        drop(connection)
        return .failed
    }

    private func flush(_ connection: Connection) {
        while !connection.pending.isEmpty {
            let n = connection.pending.withUnsafeBytes { write(connection.fd, $0.baseAddress, $0.count) }
            if n > 0 {
                connection.pending.removeFirst(n)
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                return
            } else {
                drop(connection)
                return
            }
        }
    }

    private func drop(_ connection: Connection) {
        guard !connection.closed else { return }
        connection.closed = true
        connection.open = false
        connection.pending = []
        close(connection.fd)
    }

    // MARK: - The stream

    /// Per tick: read the wall clock, build the frame once (the payload the NOTIFY sender
    /// would send, with that stamp), write it to every open socket, one write(2) each.
    private func send(_ stream: NotifyStream) -> FloorSendReport {
        var report = FloorSendReport()
        let targets = connections.filter(\.open)
        report.sockets = targets.count
        var frame: [UInt8] = []
        frame.reserveCapacity(stream.payloadSize + 10)
        let before = Self.threadCPU()
        let start = Clock.monotonic()
        for seq in 0..<stream.count {
            if case .rate(let perSecond) = stream.kind { Clock.sleep(until: start + Double(seq) / perSecond) }
            let stamp = Clock.wallMicros()
            if seq == 0 { report.sent.firstSend = stamp }
            let payload = Payload.notify(phase: stream.phase, seq: seq, sentMicros: stamp, size: stream.payloadSize)
            frame.removeAll(keepingCapacity: true)
            Self.appendTextFrameHeader(length: payload.utf8.count, to: &frame)
            frame += payload.utf8
            frame.withUnsafeBytes { bytes in
                for connection in targets {
                    guard !connection.closed else {
                        report.failed += 1
                        continue
                    }
                    switch deliver(bytes, to: connection) {
                    case .whole: report.writes += 1
                    case .short: report.shortWrites += 1
                    case .wouldBlock: report.wouldBlock += 1
                    case .queued: report.queued += 1
                    case .failed: report.failed += 1
                    }
                }
            }
            report.pass.record(Clock.wallMicros() - stamp)
            report.sent.statements += 1
            report.sent.notifies += 1
        }
        report.failed += flushAll(targets, timeout: 10)
        report.sent.lastAnswer = Clock.wallMicros()
        let after = Self.threadCPU()
        report.userSeconds = after.user - before.user
        report.systemSeconds = after.system - before.system
        return report
    }

    /// Waits (poll for POLLOUT) until every socket's queued bytes are written; returns the
    /// sockets that still had bytes after `timeout` seconds (then dropped).
    private func flushAll(_ targets: [Connection], timeout: Double) -> Int {
        let deadline = Clock.monotonic() + timeout
        while true {
            let waiting = targets.filter { !$0.closed && !$0.pending.isEmpty }
            if waiting.isEmpty { return 0 }
            if Clock.monotonic() > deadline {
                for connection in waiting { drop(connection) }
                return waiting.count
            }
            var fds = waiting.map { pollfd(fd: $0.fd, events: Int16(POLLOUT), revents: 0) }
            _ = poll(&fds, nfds_t(fds.count), 100)
            for (index, connection) in waiting.enumerated() where fds[index].revents != 0 { flush(connection) }
        }
    }

    static func appendTextFrameHeader(length: Int, to frame: inout [UInt8]) {
        frame.append(0x81)  // FIN, text; server frames are not masked
        if length < 126 {
            frame.append(UInt8(length))
        } else if length <= 0xFFFF {
            frame += [126, UInt8(length >> 8), UInt8(length & 0xFF)]
        } else {
            frame.append(127)
            frame += (0..<8).reversed().map { UInt8(truncatingIfNeeded: length >> ($0 * 8)) }
        }
    }

    static func threadCPU() -> (user: Double, system: Double) {
        var usage = rusage()
        guard getrusage(rusageThread, &usage) == 0 else { return (0, 0) }
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return (seconds(usage.ru_utime), seconds(usage.ru_stime))
    }
}
