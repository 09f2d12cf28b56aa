/// Told when PostgreSQL refuses a client's message for its content (not for an outage,
/// which is retried). The socket that sent it is closed with the reason.
public protocol MessageSender: Sendable {
    func messageRejected(reason: String)
}

/// One client message (or meta event) and every NOTIFY it becomes: one per channel of the
/// socket plus the audit copies. They are sent in one transaction, all or none.
public struct OutgoingMessage: Sendable {
    public var notifications: [(channel: String, payload: [UInt8])]
    public let sender: (any MessageSender)?

    public init(notifications: [(channel: String, payload: [UInt8])], sender: (any MessageSender)?) {
        self.notifications = notifications
        self.sender = sender
    }
}
