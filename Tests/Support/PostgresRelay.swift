import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A TCP relay in front of a test cluster whose paths a test can cut the way a network
/// partition does: nothing is closed and nothing answers. Each connection (a flow) is told
/// apart by the `application_name` of its startup packet (the test URIs use no TLS), so a
/// test can cut the server's listener (`postgres-websockets listener`) or its notifier lanes
/// (`postgres-websockets notifier`) alone.
///
/// What a cut flow does, modelled on TCP across a dead link:
/// - bytes sent into it are held, in the relay and then in the kernel's buffers (the relay
///   holds up to `holdLimit` per direction, then stops reading, so a large send blocks as it
///   would against a full window);
/// - at the heal, what was held is delivered, followed by a close the sender made meanwhile
///   (FIN after data, as the sender's kernel would keep retransmitting both);
/// - a sender that reset its connection (RST) meanwhile takes back what it had not yet
///   delivered: those bytes are dropped, and the other side is reset.
///
/// A connection attempt that starts while its application is cut gets no answer; if the
/// client has given up by the heal, nothing of it reaches PostgreSQL.
///
/// One thread polls every socket. `stop()` closes them all; call it in a `defer`, so that a
/// failing test leaves no path cut (a server shutting down may wait on one).
public final class PostgresRelay: @unchecked Sendable {
    public static let listenerApplication = "postgres-websockets listener"
    public static let notifierApplication = "postgres-websockets notifier"
    public static let holdLimit = 64 * 1024

    public let port: Int
    private let database: String
    private let upstream: Upstream
    private let listenFD: Int32
    private let wakeFDs: (read: Int32, write: Int32)
    /// Guards `commands`, `stopping` and `counters`.
    private let lock = NSLock()
    private var commands: [(command: Command, done: @Sendable (Int) -> Void)] = []
    private var stopping = false
    private var counters: [String: Stats] = [:]
    // The relay thread's own state.
    private var flows: [Flow] = []
    private var cutApplications: Set<String> = []
    private var nextFlowID = 0

    /// The database URI that reaches `database` through the relay.
    public var uri: String { uri(database: database) }

    public func uri(database: String) -> String {
        "postgresql://postgres@127.0.0.1:\(port)/\(database)?sslmode=disable"
    }

    /// What happened to the flows of one application so far.
    public struct Stats: Sendable, Equatable {
        /// Connections identified (the startup packet read), open or not.
        public var opened = 0
        /// Connections open now (either side).
        public var open = 0
        /// Cut flows whose client reset its connection, so that what it had sent into the
        /// cut was dropped.
        public var resetWhileCut = 0
        /// Cut flows whose client was gone at the heal while PostgreSQL's answer was held:
        /// the client never learned what became of its last command.
        public var answersLost = 0
    }

    private enum Upstream {
        case unix(String)
        case tcp(Int)
    }

    private enum Command {
        case cut(application: String, newConnectionsToo: Bool)
        case heal(application: String)
    }

    /// Starts a relay in front of `cluster` (its Unix socket, or its TCP port).
    public static func start(upstream cluster: TemporaryPostgres, database: String = "postgres") throws
        -> PostgresRelay
    {
        let upstream: Upstream =
            cluster.tcp ? .tcp(cluster.port) : .unix("\(cluster.directory)/.s.PGSQL.\(cluster.port)")
        return try PostgresRelay(upstream: upstream, database: database)
    }

    private init(upstream: Upstream, database: String) throws {
        self.upstream = upstream
        self.database = database
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TemporaryPostgres.Failure(description: "relay: socket failed") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound, listen(fd, 64) == 0 else {
            close(fd)
            throw TemporaryPostgres.Failure(description: "relay: cannot listen on 127.0.0.1")
        }
        Self.setNonBlocking(fd)
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else {
            close(fd)
            throw TemporaryPostgres.Failure(description: "relay: pipe failed")
        }
        Self.setNonBlocking(pipeFDs[0])
        Self.setNonBlocking(pipeFDs[1])
        listenFD = fd
        wakeFDs = (pipeFDs[0], pipeFDs[1])
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in run() }
        thread.name = "postgres-relay"
        thread.start()
    }

    // MARK: - What tests call

    /// Cuts every flow of `application` that is open now and, with `newConnectionsToo`,
    /// every one opened until `heal`. Returns how many open flows it cut.
    @discardableResult
    public func cut(application: String, newConnectionsToo: Bool = true) async -> Int {
        await submit(.cut(application: application, newConnectionsToo: newConnectionsToo))
    }

    /// Heals every cut flow of `application` and lets new ones through. Returns how many
    /// cut flows were still there.
    @discardableResult
    public func heal(application: String) async -> Int {
        await submit(.heal(application: application))
    }

    public func stats(_ application: String) -> Stats {
        lock.withLock { counters[application] ?? Stats() }
    }

    /// Closes every socket of the relay (a reset for the flows still open); returns at once,
    /// the thread finishes by itself. Safe to call more than once.
    public func stop() {
        let pending = lock.withLock { () -> [(command: Command, done: @Sendable (Int) -> Void)]? in
            guard !stopping else { return nil }
            stopping = true
            defer { commands = [] }
            return commands
        }
        guard let pending else { return }
        pending.forEach { $0.done(0) }
        wake()
    }

    deinit {
        // The thread holds the relay until it exits: the pipe outlives every wake().
        close(wakeFDs.read)
        close(wakeFDs.write)
    }

    private func submit(_ command: Command) async -> Int {
        await withCheckedContinuation { (continuation: CheckedContinuation<Int, Never>) in
            let accepted = lock.withLock {
                guard !stopping else { return false }
                commands.append((command, { continuation.resume(returning: $0) }))
                return true
            }
            if accepted { wake() } else { continuation.resume(returning: 0) }
        }
    }

    private func wake() {
        var byte: UInt8 = 1
        _ = write(wakeFDs.write, &byte, 1)
    }

    // MARK: - The relay thread

    private final class Flow {
        let id: Int
        var client: Int32
        var server: Int32 = -1
        /// Nil until the startup packet is read.
        var application: String? = nil
        var startup: [UInt8] = []
        var cut = false
        var toServer: [UInt8] = []
        var toClient: [UInt8] = []
        var heldFromClient: [UInt8] = []
        var heldFromServer: [UInt8] = []
        var clientEnd = End.open
        var serverEnd = End.open
        var serverWriteShut = false
        var clientWriteShut = false
        var finished = false

        init(id: Int, client: Int32) {
            self.id = id
            self.client = client
        }
    }

    private enum End { case open, eof, reset }

    private func run() {
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let (work, stop) = lock.withLock {
                defer { commands = [] }
                return (commands, stopping)
            }
            if stop { break }
            for (command, done) in work { done(apply(command, chunk: &chunk)) }

            var fds = [
                pollfd(fd: wakeFDs.read, events: Int16(POLLIN), revents: 0),
                pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0),
            ]
            var owners: [(flow: Flow, isClient: Bool)] = []
            for flow in flows {
                // A side that ended and has nothing to be written is left out: poll would
                // report its hang-up again and again.
                for isClient in [true, false] {
                    let fd = isClient ? flow.client : flow.server
                    let events = events(flow, client: isClient)
                    let ended = (isClient ? flow.clientEnd : flow.serverEnd) != .open
                    guard fd >= 0, !(ended && events == 0) else { continue }
                    fds.append(pollfd(fd: fd, events: events, revents: 0))
                    owners.append((flow, isClient))
                }
            }
            let ready = poll(&fds, nfds_t(fds.count), -1)
            if ready < 0 { continue }
            if fds[0].revents != 0 {
                var sink = [UInt8](repeating: 0, count: 64)
                while read(wakeFDs.read, &sink, sink.count) > 0 {}
            }
            if fds[1].revents != 0 { acceptAll() }
            for (index, owner) in owners.enumerated() where !owner.flow.finished {
                let revents = Int32(fds[index + 2].revents)
                guard revents != 0 else { continue }
                if revents & Int32(POLLOUT) != 0 { flush(owner.flow, client: owner.isClient) }
                if revents & (Int32(POLLIN) | Int32(POLLHUP) | Int32(POLLERR)) != 0 {
                    receive(owner.flow, client: owner.isClient, chunk: &chunk)
                }
            }
            for flow in flows where !flow.finished { settle(flow) }
            flows.removeAll { $0.finished }
        }
        for flow in flows { finish(flow, abort: true) }
        flows = []
        close(listenFD)
    }

    private func events(_ flow: Flow, client: Bool) -> Int16 {
        var events: Int32 = 0
        if client {
            let reading =
                flow.clientEnd == .open
                && (flow.application == nil
                    || (flow.cut ? flow.heldFromClient.count < Self.holdLimit : flow.toServer.count < 1 << 20))
            if reading { events |= Int32(POLLIN) }
            if !flow.toClient.isEmpty { events |= Int32(POLLOUT) }
        } else {
            let reading =
                flow.serverEnd == .open
                && (flow.cut ? flow.heldFromServer.count < Self.holdLimit : flow.toClient.count < 1 << 20)
            if reading { events |= Int32(POLLIN) }
            if !flow.toServer.isEmpty { events |= Int32(POLLOUT) }
        }
        return Int16(events)
    }

    private func acceptAll() {
        while true {
            let fd = accept(listenFD, nil, nil)
            guard fd >= 0 else { return }
            Self.setNonBlocking(fd)
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            nextFlowID += 1
            flows.append(Flow(id: nextFlowID, client: fd))
        }
    }

    /// One read from a side: bytes, end of stream or reset.
    private func receive(_ flow: Flow, client: Bool, chunk: inout [UInt8]) {
        let fd = client ? flow.client : flow.server
        let n = read(fd, &chunk, chunk.count)
        if n > 0 {
            let bytes = chunk[0..<n]
            if client {
                if flow.application == nil {
                    flow.startup += bytes
                    identify(flow)
                } else if flow.cut {
                    flow.heldFromClient += bytes
                } else {
                    flow.toServer += bytes
                }
            } else if flow.cut {
                flow.heldFromServer += bytes
            } else {
                flow.toClient += bytes
            }
        } else if n == 0 {
            if client { flow.clientEnd = .eof } else { flow.serverEnd = .eof }
        } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
            if client { flow.clientEnd = .reset } else { flow.serverEnd = .reset }
        }
    }

    /// Reads the startup packet: answers SSL and GSS encryption requests with "N", and
    /// takes the application name from the protocol 3 packet.
    private func identify(_ flow: Flow) {
        while flow.startup.count >= 8 {
            let length = Int(Self.bigEndian32(flow.startup, at: 0))
            let code = Self.bigEndian32(flow.startup, at: 4)
            if length == 8 && (code == 80_877_103 || code == 80_877_104) {
                flow.startup.removeFirst(8)
                flow.toClient.append(UInt8(ascii: "N"))
                continue
            }
            guard length < 8 || length > 100_000 || flow.startup.count >= length else { return }
            var application = ""
            if code == 196_608, length <= flow.startup.count {
                let fields = flow.startup[8..<length].split(separator: 0, omittingEmptySubsequences: false)
                var index = 0
                while index + 1 < fields.count {
                    if String(decoding: fields[index], as: UTF8.self) == "application_name" {
                        application = String(decoding: fields[index + 1], as: UTF8.self)
                    }
                    index += 2
                }
            }
            flow.application = application
            lock.withLock {
                counters[application, default: Stats()].opened += 1
                counters[application, default: Stats()].open += 1
            }
            let packet = flow.startup
            flow.startup = []
            if cutApplications.contains(application) {
                flow.cut = true
                flow.heldFromClient = packet
            } else if connectServer(flow) {
                flow.toServer = packet
            }
            return
        }
    }

    /// Connects the flow to PostgreSQL (blocking: a local socket). False when it failed and
    /// the flow was dropped.
    private func connectServer(_ flow: Flow) -> Bool {
        let fd: Int32
        switch upstream {
        case .unix(let path):
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let capacity = MemoryLayout.size(ofValue: address.sun_path)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                let bytes = Array(path.utf8.prefix(capacity - 1))
                raw.copyBytes(from: bytes)
                raw[bytes.count] = 0
            }
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            if connected != 0 {
                close(fd)
                finish(flow, abort: true)
                return false
            }
        case .tcp(let port):
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(port).bigEndian
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            if connected != 0 {
                close(fd)
                finish(flow, abort: true)
                return false
            }
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        Self.setNonBlocking(fd)
        flow.server = fd
        return true
    }

    private func flush(_ flow: Flow, client: Bool) {
        let fd = client ? flow.client : flow.server
        let written = (client ? flow.toClient : flow.toServer).withUnsafeBytes { bytes in
            send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
        }
        if written > 0 {
            if client { flow.toClient.removeFirst(written) } else { flow.toServer.removeFirst(written) }
        } else if written < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
            // The receiver is gone: what it was sent is lost with it.
            if client {
                flow.clientEnd = .reset
                flow.toClient = []
            } else {
                flow.serverEnd = .reset
                flow.toServer = []
            }
        }
    }

    /// Passes a side's end on to the other once what came before it is delivered.
    private func settle(_ flow: Flow) {
        guard !flow.cut else { return }
        if flow.application == nil {
            if flow.clientEnd != .open { finish(flow, abort: false) }
            return
        }
        if flow.clientEnd == .reset || flow.serverEnd == .reset {
            finish(flow, abort: true)
            return
        }
        if flow.clientEnd == .eof && flow.toServer.isEmpty {
            if flow.server < 0 {
                finish(flow, abort: false)
                return
            }
            if !flow.serverWriteShut {
                flow.serverWriteShut = true
                shutdown(flow.server, Int32(SHUT_WR))
            }
        }
        if flow.serverEnd == .eof && flow.toClient.isEmpty && !flow.clientWriteShut {
            flow.clientWriteShut = true
            shutdown(flow.client, Int32(SHUT_WR))
        }
        if flow.clientEnd != .open && (flow.server < 0 || flow.serverEnd != .open) {
            finish(flow, abort: false)
        }
    }

    private func finish(_ flow: Flow, abort: Bool) {
        guard !flow.finished else { return }
        flow.finished = true
        for fd in [flow.client, flow.server] where fd >= 0 {
            if abort {
                var hard = linger(l_onoff: 1, l_linger: 0)
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, socklen_t(MemoryLayout<linger>.size))
            }
            close(fd)
        }
        flow.client = -1
        flow.server = -1
        if let application = flow.application {
            lock.withLock { counters[application, default: Stats()].open -= 1 }
        }
    }

    private func apply(_ command: Command, chunk: inout [UInt8]) -> Int {
        switch command {
        case .cut(let application, let newConnectionsToo):
            if newConnectionsToo { cutApplications.insert(application) }
            var count = 0
            for flow in flows where !flow.finished && !flow.cut && flow.application == application {
                flow.cut = true
                // Read but not yet delivered: in flight, held like what comes next.
                flow.heldFromClient = flow.toServer
                flow.toServer = []
                flow.heldFromServer = flow.toClient
                flow.toClient = []
                count += 1
            }
            return count
        case .heal(let application):
            cutApplications.remove(application)
            var count = 0
            for flow in flows where !flow.finished && flow.cut && flow.application == application {
                heal(flow, chunk: &chunk)
                count += 1
            }
            return count
        }
    }

    private func heal(_ flow: Flow, chunk: inout [UInt8]) {
        // First learn how each side ended meanwhile: read what the kernel still holds.
        while flow.clientEnd == .open {
            let before = flow.heldFromClient.count
            receive(flow, client: true, chunk: &chunk)
            if flow.heldFromClient.count == before { break }
        }
        while flow.server >= 0 && flow.serverEnd == .open {
            let before = flow.heldFromServer.count
            receive(flow, client: false, chunk: &chunk)
            if flow.heldFromServer.count == before { break }
        }
        flow.cut = false
        if flow.clientEnd == .reset {
            let application = flow.application ?? ""
            lock.withLock {
                counters[application, default: Stats()].resetWhileCut += 1
                if !flow.heldFromServer.isEmpty { counters[application, default: Stats()].answersLost += 1 }
            }
            finish(flow, abort: true)
            return
        }
        if flow.clientEnd != .open && !flow.heldFromServer.isEmpty {
            lock.withLock { counters[flow.application ?? "", default: Stats()].answersLost += 1 }
        }
        if flow.server < 0 {
            // A connection attempt made during the cut: if its client gave up, it ends here.
            guard flow.clientEnd == .open, connectServer(flow) else {
                finish(flow, abort: false)
                return
            }
        }
        flow.toServer = flow.heldFromClient + flow.toServer
        flow.heldFromClient = []
        if flow.clientEnd == .open { flow.toClient = flow.heldFromServer + flow.toClient }
        flow.heldFromServer = []
    }

    // MARK: - Helpers

    private static func setNonBlocking(_ fd: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    private static func bigEndian32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        bytes[offset..<offset + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }
}
