/// What `pgws.presence_apply` and `pgws.presence_drop` send on `pgws:presence` when a
/// member's first socket on a channel arrives or its last one goes, on any server:
/// `{"type": "join" | "leave", "channel": C, "member": {...}}`.
struct PresenceSignal: Equatable {
    enum Change: String {
        case join
        case leave
    }

    let change: Change
    let channel: String
    let member: JSONValue

    /// Nil for anything the schema's functions do not send (a NOTIFY by hand on the channel).
    init?(payload: [UInt8]) {
        guard let signal = try? JSONParser.parse(payload),
            let change = signal["type"]?.stringValue.flatMap(Change.init(rawValue:)),
            let channel = signal["channel"]?.stringValue, ChannelName.problem(with: channel) == nil,
            case .object = signal["member"], let member = signal["member"]
        else { return nil }
        self.change = change
        self.channel = channel
        self.member = member
    }

    static let channelBytes = Array(DurableSchema.presenceChannel.utf8)

    /// The `pgws.v1` frame sockets watching the channel get.
    var frame: JSONValue {
        .object([("type", .string(change.rawValue)), ("channel", .string(channel)), ("member", member)])
    }

    /// On a new listener connection, with presence on.
    static func prepare(_ conn: PGConnection) -> Result<Void, DatabaseError> {
        guard let quoted = conn.quoteIdentifier(DurableSchema.presenceChannel) else {
            return .failure(.connection(conn.errorMessage))
        }
        return conn.execute("LISTEN \(quoted);").map { _ in () }
    }
}

/// Where the listener hands presence changes: the hub, which tells the sockets watching.
protocol PresenceWatchers: Sendable {
    /// Whether any socket of this server wants joins and leaves now; signals that arrive
    /// while none does are dropped unread.
    var isWatched: Bool { get }
    func presenceChanged(_ signal: PresenceSignal)
}
