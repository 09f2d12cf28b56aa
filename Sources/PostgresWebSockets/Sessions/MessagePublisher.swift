/// Where a socket's messages go: the notifier, as a socket sees it.
protocol MessagePublisher: Sendable {
    var isDatabaseUp: Bool { get }
    /// Queues a client message on `lane` (a socket always uses the same one, to keep its order).
    func submit(_ message: OutgoingMessage, lane: Int) -> SubmitResult
    /// Queues a meta event; never refused.
    func submitEvent(_ message: OutgoingMessage, lane: Int)
}

extension Notifier: MessagePublisher {
    var isDatabaseUp: Bool { status.isUp }
}
