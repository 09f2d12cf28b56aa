/// Told what became of a client's message: refused by PostgreSQL for its content (an outage
/// is retried, never reported), or committed (only when the message asks for it), with its
/// offset when its channel is durable. A class: a message is copied several times between a
/// socket and its commit, and a reference costs one retain where an existential struct costs
/// value-witness calls.
protocol MessageSender: AnyObject, Sendable {
    func messageRejected(reason: String)
    func messageCommitted(offset: UInt64?)
}

/// One client message (or meta event) and every NOTIFY it becomes: one per channel of the
/// socket plus the audit copies. They are sent in one transaction, all or none.
struct OutgoingMessage: Sendable {
    var notifications: [(channel: String, payload: [UInt8])]
    let sender: (any MessageSender)?
    /// The sender wants `messageCommitted` (a `pgws.v1` publish waiting for its reply).
    var confirms = false

    var byteCount: Int { notifications.reduce(0) { $0 + $1.channel.utf8.count + $1.payload.count } }
}

/// What a socket is told when it offers a client message to the notifier.
enum SubmitResult: Sendable, Equatable {
    case accepted
    /// Queued, but the queue is over its high watermark while PostgreSQL is up: the sender
    /// should stop reading until the notifier's `PausedWriters` are resumed.
    case congested
    /// Not queued: the queue holds `max-pending-messages` client messages.
    case full
}

/// The sockets that stopped reading because the queue to PostgreSQL was congested, as the
/// notifier sees them: it resumes them when the queue has drained below its low watermark,
/// and when the database went down (the queue will not drain, so they must learn so).
protocol PausedWriters: Sendable {
    func resumePausedWriters()
}
