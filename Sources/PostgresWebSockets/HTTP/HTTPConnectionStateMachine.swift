import NIOCore

/// The life of a connection before it is a WebSocket: reading its one request head within
/// its limits, waiting for PostgreSQL's LISTEN after an authorized handshake, and the time
/// limit over both. Each event returns the action the `HTTPHandler` carries out.
struct HTTPConnectionStateMachine<Pending> {
    enum State {
        /// Reading the head. `buffer`: bytes so far; `checker` refuses garbage as it arrives,
        /// up to the end of the head (what follows may be WebSocket frames).
        case reading(buffer: ByteBuffer?, checker: RequestHead.ByteChecker)
        /// The head is parsed and being answered; `rest`: bytes the client sent after it.
        case routing(rest: ByteBuffer?)
        /// An authorized upgrade waits until PostgreSQL LISTENs on its channels. `early`:
        /// frames the client sent before it saw the 101, for the frame decoder.
        case awaitingListen(Pending, early: ByteBuffer?)
        case responding
        case upgraded
        case closed
    }

    enum ReadAction {
        case none
        case route(RequestHead)
        case refuse(Refusal)
        /// The client sent more than `maxEarlyBytes` before its 101: drop it.
        case closeConnection
    }

    enum EndAction {
        case none
        /// Give back what the pending upgrade holds.
        case abandon(Pending)
    }

    /// Bytes a client may send after its handshake and before the 101.
    static var maxEarlyBytes: Int { 64 * 1024 }

    let maxHeadBytes: Int
    private(set) var state = State.reading(buffer: nil, checker: RequestHead.ByteChecker())
    /// Bytes read in all, to tell a silent connection from a slow request.
    private(set) var bytesReceived = 0

    init(maxHeadBytes: Int) {
        self.maxHeadBytes = maxHeadBytes
    }

    mutating func received(_ bytes: ByteBuffer) -> ReadAction {
        var bytes = bytes
        bytesReceived += bytes.readableBytes
        switch state {
        case .reading(var buffer, let checker):
            let previousLength = buffer?.readableBytes ?? 0
            if buffer == nil { buffer = bytes } else { buffer!.writeBuffer(&bytes) }
            return readHead(buffer!, previousLength: previousLength, checker: checker)
        case .routing(var rest):
            if rest == nil { rest = bytes } else { rest!.writeBuffer(&bytes) }
            state = .routing(rest: rest)
            return .none
        case .awaitingListen(let pending, var early):
            guard (early?.readableBytes ?? 0) + bytes.readableBytes <= Self.maxEarlyBytes else {
                state = .closed
                return .closeConnection
            }
            if early == nil { early = bytes } else { early!.writeBuffer(&bytes) }
            state = .awaitingListen(pending, early: early)
            return .none
        case .responding, .upgraded, .closed:
            return .none
        }
    }

    /// Looks for the empty line that ends the head, in what `previousLength` bytes did not
    /// already show, and checks the new bytes up to that end.
    private mutating func readHead(
        _ buffer: ByteBuffer, previousLength: Int, checker: RequestHead.ByteChecker
    ) -> ReadAction {
        var checker = checker
        let start = max(0, previousLength - 3)
        let end: Int? = buffer.withUnsafeReadableBytes { bytes in
            var index = start
            while index + 3 < bytes.count {
                if bytes[index + 3] == UInt8(ascii: "\n"), bytes[index] == UInt8(ascii: "\r"),
                    bytes[index + 1] == UInt8(ascii: "\n"), bytes[index + 2] == UInt8(ascii: "\r")
                {
                    return index + 4
                }
                index += 1
            }
            return nil
        }
        let checkTo = end ?? buffer.readableBytes
        let view = buffer.readableBytesView
        if previousLength < checkTo,
            let problem = checker.check(view[(view.startIndex + previousLength)..<(view.startIndex + checkTo)])
        {
            state = .responding
            return .refuse(Refusal(.badRequest, "malformed HTTP request: \(problem)"))
        }
        let tooLarge = Refusal(.headTooLarge, "request line and headers exceed \(maxHeadBytes) bytes")
        guard let headLength = end else {
            if buffer.readableBytes > maxHeadBytes {
                state = .responding
                return .refuse(tooLarge)
            }
            state = .reading(buffer: buffer, checker: checker)
            return .none
        }
        guard headLength <= maxHeadBytes else {
            state = .responding
            return .refuse(tooLarge)
        }
        do {
            let head = try buffer.withUnsafeReadableBytes { bytes throws(Refusal) in
                try RequestHead.parse(UnsafeRawBufferPointer(rebasing: bytes[0..<headLength]))
            }
            let rest = buffer.getSlice(at: buffer.readerIndex + headLength, length: buffer.readableBytes - headLength)
            state = .routing(rest: rest?.readableBytes == 0 ? nil : rest)
            return .route(head)
        } catch {
            state = .responding
            return .refuse(Refusal(error.code, "malformed HTTP request: \(error.reason)"))
        }
    }

    /// The request was answered with anything but an upgrade.
    mutating func responding() -> EndAction {
        defer { state = .responding }
        if case .awaitingListen(let pending, _) = state { return .abandon(pending) }
        return .none
    }

    /// An authorized upgrade holds `pending` until PostgreSQL LISTENs.
    mutating func awaitListen(_ pending: Pending) {
        guard case .routing(let rest) = state else { preconditionFailure("an upgrade outside routing: \(state)") }
        state = .awaitingListen(pending, early: rest)
    }

    enum ListenAction {
        case none
        /// Send the 101 and hand the connection, with these early bytes, to the session.
        case upgrade(Pending, early: ByteBuffer?)
        case abandon(Pending)
    }

    /// PostgreSQL LISTENs on the upgrade's channels (or the database is down).
    mutating func listening(connectionIsActive: Bool) -> ListenAction {
        guard case .awaitingListen(let pending, let early) = state else { return .none }
        guard connectionIsActive else {
            state = .closed
            return .abandon(pending)
        }
        state = .upgraded
        return .upgrade(pending, early: early)
    }

    enum TimeoutAction {
        case none
        /// Nothing was ever sent: close without an answer.
        case closeSilently
        /// Answer 408; give back what a pending upgrade holds.
        case refuse(Refusal, abandoning: Pending?)
    }

    mutating func timedOut() -> TimeoutAction {
        let refusal = Refusal(.timeout, "request not completed in time")
        switch state {
        case .reading where bytesReceived == 0:
            state = .closed
            return .closeSilently
        case .reading, .routing:
            state = .responding
            return .refuse(refusal, abandoning: nil)
        case .awaitingListen(let pending, _):
            state = .responding
            return .refuse(refusal, abandoning: pending)
        case .responding, .upgraded, .closed:
            return .none
        }
    }

    /// The connection is gone.
    mutating func closed() -> EndAction {
        defer { state = .closed }
        if case .awaitingListen(let pending, _) = state { return .abandon(pending) }
        return .none
    }
}
