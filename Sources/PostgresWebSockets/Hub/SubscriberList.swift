/// One channel on one event loop: how many sockets hold it (from their handshake on, so its
/// LISTEN is kept), and the open ones that read it. An array for fast iteration on every
/// broadcast, plus positions for O(1) removal when a socket closes.
final class SubscriberList {
    private(set) var members: ContiguousArray<any ShardMember> = []
    private var positions: [ObjectIdentifier: Int] = [:]
    /// Sockets holding the channel: open subscribers plus handshakes waiting for the LISTEN.
    var holders = 0
    /// The dispatch pass that last wrote to these sockets, so each is flushed once per pass.
    var lastPass = 0

    func append(_ member: any ShardMember) {
        let id = ObjectIdentifier(member)
        guard positions[id] == nil else { return }
        positions[id] = members.count
        members.append(member)
    }

    func remove(_ member: any ShardMember) {
        guard let index = positions.removeValue(forKey: ObjectIdentifier(member)) else { return }
        let last = members.removeLast()
        if index < members.count {
            members[index] = last
            positions[ObjectIdentifier(last)] = index
        }
    }
}
