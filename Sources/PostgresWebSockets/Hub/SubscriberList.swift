/// One channel on one event loop: how many sockets hold it (from their handshake on, so its
/// LISTEN is kept), and the open ones that read it. An array for fast iteration on every
/// broadcast, plus positions for O(1) removal when a socket closes.
final class SubscriberList {
    /// Unique on its shard for the shard's life: log entries name their list by it.
    let id: Int
    private(set) var records: ContiguousArray<MemberRecord> = []
    private var positions: [ObjectIdentifier: Int] = [:]
    /// Sockets holding the channel: open subscribers plus handshakes waiting for the LISTEN.
    var holders = 0
    /// The dispatch pass that last wrote to these sockets, so each is flushed once per pass.
    var lastPass = 0

    init(id: Int) {
        self.id = id
    }

    func append(_ record: MemberRecord) {
        let key = ObjectIdentifier(record)
        guard positions[key] == nil else { return }
        positions[key] = records.count
        records.append(record)
    }

    func remove(_ record: MemberRecord) {
        guard let index = positions.removeValue(forKey: ObjectIdentifier(record)) else { return }
        let last = records.removeLast()
        if index < records.count {
            records[index] = last
            positions[ObjectIdentifier(last)] = index
        }
    }
}
