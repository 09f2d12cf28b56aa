/// Which channels PostgreSQL must LISTEN on, which it does, and who waits for that.
///
/// Holders (the hub's event loops) acquire and release channels; the listener's connection
/// asks for the next command and reports what PostgreSQL answered. Only channels whose holder
/// count crossed zero since the connection last looked are examined, so the cost of a change
/// does not grow with the channels in use. Pure state: the `Listener` carries out the actions.
struct ListenStateMachine<Waiter: Sendable>: Sendable {
    /// A LISTEN/UNLISTEN round trip.
    struct Sync: Equatable {
        var listen: [ChannelKey] = []
        var unlisten: [ChannelKey] = []
        var isEmpty: Bool { listen.isEmpty && unlisten.isEmpty }
    }

    private enum Connection {
        case disconnected
        /// `listening`: what PostgreSQL acknowledged on this connection, each with how many
        /// notifications the listener had received when it did (see `listenedSince`). `isUp`
        /// turns true the first time it LISTENs every channel held, and stays true until the
        /// connection is lost.
        case connected(listening: [ChannelKey: UInt64], inFlight: Sync?, isUp: Bool)
    }

    private var holders: [ChannelKey: Int] = [:]
    /// Channels whose holder count went to or from zero since the connection last looked.
    private var changed: Set<ChannelKey> = []
    private var connection = Connection.disconnected
    private var waiters: [(channels: [ChannelKey], waiter: Waiter)] = []

    init() {}

    var isUp: Bool {
        if case .connected(_, _, true) = connection { return true }
        return false
    }

    /// Channels PostgreSQL acknowledged LISTENing on.
    var listeningCount: Int {
        if case .connected(let listening, _, _) = connection { return listening.count }
        return 0
    }

    var heldChannels: Int { holders.count }

    func isHeld(_ channel: ChannelKey) -> Bool { holders[channel] != nil }

    /// The notification sequence from which `channel` has been LISTENed without a break:
    /// every notification of it committed since then has that sequence or a later one. Nil
    /// while it is not LISTENed. A resume from an earlier sequence may have missed some.
    func listenedSince(_ channel: ChannelKey) -> UInt64? {
        guard case .connected(let listening, _, _) = connection else { return nil }
        return listening[channel]
    }

    // MARK: - Holders (event loops)

    /// Adds a holder to each channel. True when the connection must look again.
    mutating func acquire(_ channels: [ChannelKey]) -> Bool {
        var needsLook = false
        for channel in channels {
            let count = holders[channel, default: 0]
            holders[channel] = count + 1
            if count == 0 {
                changed.insert(channel)
                needsLook = true
            }
        }
        return needsLook
    }

    /// Removes a holder from each channel. True when the connection must look again.
    mutating func release(_ channels: [ChannelKey]) -> Bool {
        var needsLook = false
        for channel in channels {
            guard let count = holders[channel] else { continue }
            if count <= 1 {
                holders[channel] = nil
                changed.insert(channel)
                needsLook = true
            } else {
                holders[channel] = count - 1
            }
        }
        return needsLook
    }

    enum WaitAction: Equatable {
        /// PostgreSQL LISTENs on all of them, or the database is down (they are LISTENed
        /// on reconnect): the waiter need not wait.
        case ready
        case wait
    }

    /// Registers `waiter` until PostgreSQL LISTENs on every one of `channels`.
    mutating func whenListening(_ channels: [ChannelKey], _ waiter: Waiter) -> WaitAction {
        guard case .connected(let listening, _, true) = connection else { return .ready }
        if isSettled(channels, listening: listening) { return .ready }
        waiters.append((channels, waiter))
        return .wait
    }

    /// A channel that changed since the last look may be on its way out (UNLISTEN sent or
    /// due) although PostgreSQL still lists it.
    private func isSettled(_ channels: [ChannelKey], listening: [ChannelKey: UInt64]) -> Bool {
        channels.allSatisfy { listening[$0] != nil && !changed.contains($0) }
    }

    // MARK: - The connection (listener thread)

    /// A new connection LISTENs on nothing yet: every channel held needs a LISTEN.
    mutating func connected() {
        connection = .connected(listening: [:], inFlight: nil, isUp: false)
        changed = Set(holders.keys)
    }

    enum NextAction {
        /// Send these statements in one round trip, then report `syncSucceeded`.
        case sync(Sync)
        /// Nothing to send. `cameUp`: the database now counts as up. `ready`: waiters that
        /// need not wait any longer.
        case idle(cameUp: Bool, ready: [Waiter])
    }

    /// What the connection must do next; nil while a round trip is in flight or disconnected.
    mutating func nextCommand(maxStatements: Int) -> NextAction? {
        guard case .connected(let listening, nil, let isUp) = connection else { return nil }
        var sync = Sync()
        var settled = false
        while sync.listen.count + sync.unlisten.count < maxStatements, let channel = changed.popFirst() {
            let wanted = holders[channel] != nil
            if wanted && listening[channel] == nil {
                sync.listen.append(channel)
            } else if !wanted && listening[channel] != nil {
                sync.unlisten.append(channel)
            } else {
                settled = true  // acquired again before its UNLISTEN went out, or the reverse
            }
        }
        if !sync.isEmpty {
            connection = .connected(listening: listening, inFlight: sync, isUp: isUp)
            return .sync(sync)
        }
        let cameUp = !isUp
        if cameUp { connection = .connected(listening: listening, inFlight: nil, isUp: true) }
        return .idle(cameUp: cameUp, ready: cameUp || settled ? takeSettledWaiters(listening) : [])
    }

    /// PostgreSQL answered the round trip in flight, when the listener had received
    /// `received` notifications. Returns the waiters it let through.
    mutating func syncSucceeded(received: UInt64) -> [Waiter] {
        guard case .connected(var listening, let inFlight?, let isUp) = connection else { return [] }
        for channel in inFlight.listen { listening[channel] = received }
        for channel in inFlight.unlisten { listening[channel] = nil }
        connection = .connected(listening: listening, inFlight: nil, isUp: isUp)
        // Sockets waiting for these channels may open now, before any further round trip.
        return isUp ? takeSettledWaiters(listening) : []
    }

    private mutating func takeSettledWaiters(_ listening: [ChannelKey: UInt64]) -> [Waiter] {
        var ready: [Waiter] = []
        var waiting: [(channels: [ChannelKey], waiter: Waiter)] = []
        for entry in waiters {
            if isSettled(entry.channels, listening: listening) {
                ready.append(entry.waiter)
            } else {
                waiting.append(entry)
            }
        }
        waiters = waiting
        return ready
    }

    /// The connection is gone, with every LISTEN of it. Every waiter is let through (the
    /// database is down: its channels are LISTENed on reconnect). `wasUp`: the database
    /// counted as up until now.
    mutating func connectionLost() -> (wasUp: Bool, ready: [Waiter]) {
        let wasUp = isUp
        connection = .disconnected
        let ready = waiters.map(\.waiter)
        waiters = []
        return (wasUp, ready)
    }
}

extension ListenStateMachine.NextAction: Equatable where Waiter: Equatable {}
