/// Whether a socket's client messages flow to the notifier, and what it holds while they
/// cannot: the one owner of "this writer is paused".
///
/// While PostgreSQL is up but slower than the writers, a writer stops being read (TCP flow
/// control then slows the client down) instead of being closed; while PostgreSQL is down,
/// messages queue up to the limit, then the writer is closed with 1013.
struct PublishFlow {
    enum State {
        case reading
        /// Not reading from the client. `held`: messages read before the pause that the
        /// queue could not take yet, in order.
        case paused(held: [OutgoingMessage])
    }

    enum Action {
        case none
        case pauseReading
        case resumeReading
        /// The database is down and the queue full: these messages were not taken (a raw
        /// socket is closed with 1013, a `pgws.v1` socket answers each with `unavailable`).
        case refused([OutgoingMessage])
    }

    private(set) var state = State.reading

    var isPaused: Bool {
        if case .paused = state { return true }
        return false
    }

    /// A message read from the client.
    mutating func offer(
        _ message: OutgoingMessage, databaseUp: Bool, submit: (OutgoingMessage) -> SubmitResult
    ) -> Action {
        if case .paused(var held) = state, !held.isEmpty {
            state = .reading  // drops the stored reference: appending to a shared array copies all of it
            held.append(message)  // keeps the order behind what is already waiting
            state = .paused(held: held)
            return .none
        }
        switch place(message, databaseUp: databaseUp, submit: submit) {
        case .taken:
            return .none
        case .takenButCongested:
            return pause(holding: [])
        case .notTaken:
            return pause(holding: [message])
        case .refused:
            return .refused([message])
        }
    }

    /// The queue drained below its low watermark, or the database went down: offer what is
    /// held, then read again unless the queue is congested once more.
    mutating func relieved(databaseUp: Bool, submit: (OutgoingMessage) -> SubmitResult) -> Action {
        guard case .paused(var held) = state else { return .none }
        state = .reading  // drops the stored reference, so `held` is changed in place
        // What was placed leaves in one step: removing messages one by one would be quadratic.
        var placed = 0
        while placed < held.count {
            switch place(held[placed], databaseUp: databaseUp, submit: submit) {
            case .taken:
                placed += 1
            case .takenButCongested:
                held.removeFirst(placed + 1)
                state = .paused(held: held)
                return .none  // stay paused until the next relief
            case .notTaken:
                held.removeFirst(placed)
                state = .paused(held: held)
                return .none
            case .refused:
                state = .paused(held: [])
                return .refused(Array(held[placed...]))
            }
        }
        return .resumeReading
    }

    /// What was read and not yet queued, for a socket that ends: it was read, so it was
    /// taken, and still goes out.
    mutating func takeHeld() -> [OutgoingMessage] {
        guard case .paused(let held) = state else { return [] }
        state = .paused(held: [])
        return held
    }

    private enum Placement {
        case taken
        case takenButCongested
        /// The queue is full while PostgreSQL is up: hold it and wait.
        case notTaken
        case refused
    }

    /// The one policy for a submit's answer, for new and held messages alike.
    private func place(
        _ message: OutgoingMessage, databaseUp: Bool, submit: (OutgoingMessage) -> SubmitResult
    ) -> Placement {
        switch submit(message) {
        case .accepted: .taken
        case .congested: .takenButCongested
        case .full where databaseUp: .notTaken
        case .full: .refused
        }
    }

    private mutating func pause(holding held: [OutgoingMessage]) -> Action {
        if case .paused(let already) = state {
            state = .paused(held: already + held)
            return .none
        }
        state = .paused(held: held)
        return .pauseReading
    }
}
