import NIOConcurrencyHelpers
import Synchronization

/// Which sockets of this server are on which channel, for `pgws.presence`: the loop shards
/// write it as sockets start and stop reading channels, the `PresenceWriter` takes what
/// changed since its last batch. Only the latest state of a row counts, so a socket that
/// comes and goes within one batch costs PostgreSQL nothing.
final class PresenceBook: Sendable {
    struct Key: Hashable, Sendable {
        let socket: Int
        let channel: String
    }

    struct Row: Sendable {
        let member: PresenceMember?
        /// The socket's claims, JSON text.
        let claims: String
    }

    private struct State {
        var rows: [String: [Int: Row]] = [:]
        /// Rows changed since the writer last took them.
        var dirty: Set<Key> = []
        var dirtySince: Double? = nil
    }

    let settings: PresenceSettings
    /// Sockets of this server that asked for joins and leaves (`presence: true`), on any
    /// channel: while none did, the listener drops presence signals unread.
    let watchers = Atomic<Int>(0)
    /// Signalled when the first change after a batch arrives.
    let wake = WakeSignal()
    private let state = NIOLockedValueBox(State())

    init(settings: PresenceSettings) {
        self.settings = settings
    }

    /// A socket started reading `channel`.
    func joined(socket: Int, channel: String, claimsPrefix: [UInt8]) {
        let claimsBytes = Envelope.claims(fromPrefix: claimsPrefix)
        let member = (try? JSONParser.parse(claimsBytes)).flatMap {
            PresenceMember(claims: $0, claim: settings.claim, fields: settings.fields)
        }
        let row = Row(member: member, claims: String(decoding: claimsBytes, as: UTF8.self))
        change(Key(socket: socket, channel: channel)) { $0.rows[channel, default: [:]][socket] = row }
    }

    /// A socket stopped reading `channel`, or closed.
    func left(socket: Int, channel: String) {
        change(Key(socket: socket, channel: channel)) { state in
            state.rows[channel]?[socket] = nil
            if state.rows[channel]?.isEmpty == true { state.rows[channel] = nil }
        }
    }

    private func change(_ key: Key, _ body: (inout State) -> Void) {
        let first = state.withLockedValue { state -> Bool in
            body(&state)
            state.dirty.insert(key)
            guard state.dirtySince == nil else { return false }
            state.dirtySince = monotonicSeconds()
            return true
        }
        if first { wake.signal() }
    }

    /// When the oldest change not yet taken was made, nil when there is none.
    var dirtySince: Double? { state.withLockedValue { $0.dirtySince } }

    /// The rows changed since the last call: each key with its current row, nil when gone.
    func takeChanges() -> [(key: Key, row: Row?)] {
        state.withLockedValue { state in
            defer {
                state.dirty = []
                state.dirtySince = nil
            }
            return state.dirty.map { key in (key, state.rows[key.channel]?[key.socket]) }
        }
    }

    /// A batch with these rows failed: they are sent with the next one.
    func markDirty(_ keys: [Key]) {
        guard !keys.isEmpty else { return }
        state.withLockedValue { state in
            state.dirty.formUnion(keys)
            if state.dirtySince == nil { state.dirtySince = monotonicSeconds() }
        }
    }

    /// Every row is to be written again (PostgreSQL lost them: the server was swept).
    func markAllDirty() {
        state.withLockedValue { state in
            for (channel, sockets) in state.rows {
                for socket in sockets.keys { state.dirty.insert(Key(socket: socket, channel: channel)) }
            }
            if !state.dirty.isEmpty, state.dirtySince == nil { state.dirtySince = monotonicSeconds() }
        }
        wake.signal()
    }

    /// This server's members of `channel`, one per id.
    func members(of channel: String) -> [PresenceMember] {
        state.withLockedValue { state in
            var seen = Set<String>()
            var members: [PresenceMember] = []
            for row in (state.rows[channel] ?? [:]).values {
                guard let member = row.member, seen.insert(member.id).inserted else { continue }
                members.append(member)
            }
            return members
        }
    }
}
