/// The sockets of one event loop that read one channel. An array for fast iteration on
/// every broadcast, plus positions for O(1) removal when a socket closes.
final class SubscriberList {
    private(set) var sessions: ContiguousArray<WebSocketSession> = []
    private var positions: [ObjectIdentifier: Int] = [:]
    /// The dispatch pass that last wrote to these sockets, so each is flushed once per pass.
    var lastPass = 0

    var isEmpty: Bool { sessions.isEmpty }

    func append(_ session: WebSocketSession) {
        let id = ObjectIdentifier(session)
        guard positions[id] == nil else { return }
        positions[id] = sessions.count
        sessions.append(session)
    }

    func remove(_ session: WebSocketSession) {
        guard let index = positions.removeValue(forKey: ObjectIdentifier(session)) else { return }
        let last = sessions.removeLast()
        if index < sessions.count {
            sessions[index] = last
            positions[ObjectIdentifier(last)] = index
        }
    }
}
