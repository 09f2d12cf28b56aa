/// What an authorized handshake takes until its socket ends: a connection slot, and its
/// read channels held on the loop's shard (so that PostgreSQL LISTENs on them). Whoever has
/// it last gives it back, exactly once: the handshake when the socket never opens, the
/// session when it closes.
final class Admission {
    private(set) var readChannels: [ChannelKey]
    private let shard: LoopShard
    private let slots: ConnectionSlots
    private var isHeld = true

    /// Takes a slot and holds the read channels; `ready` is called (from any thread) once
    /// PostgreSQL LISTENs on all of them, or at once while the database is down. Nil, with
    /// nothing taken, when `max-connections` sockets are open.
    init?(
        readChannels: [ChannelKey], shard: LoopShard, slots: ConnectionSlots,
        whenListening ready: @escaping @Sendable () -> Void
    ) {
        guard slots.take() else { return nil }
        self.readChannels = readChannels
        self.shard = shard
        self.slots = slots
        shard.hold(readChannels, ready: ready)
    }

    /// Hands the holds of the read channels to the caller (the session, which gives each
    /// back when it stops reading it); the slot stays with the admission.
    func takeChannels() -> [ChannelKey] {
        defer { readChannels = [] }
        return readChannels
    }

    func giveBack() {
        guard isHeld else { return }
        isHeld = false
        shard.release(readChannels)
        slots.giveBack()
    }

    deinit {
        assert(!isHeld, "an admission was dropped without giving back its slot and channels")
    }
}
