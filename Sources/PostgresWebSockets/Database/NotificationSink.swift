/// Where the listener hands what PostgreSQL delivered. The receiver owns the format: the
/// listener only ever sees channel and payload bytes, borrowed from libpq for the length of
/// one call, so the receiver copies each once, straight into what it sends on.
protocol NotificationSink<Batch>: Sendable {
    associatedtype Batch: NotificationBatch
    /// An empty batch for the listener thread to fill.
    func makeBatch() -> Batch
    /// Takes a filled batch, on the listener thread. `.stop` means the receiver is full: the
    /// listener leaves PostgreSQL's socket unread (its notification queue absorbs the burst)
    /// until the receiver calls `producer.produceMore()`.
    func receive(_ batch: Batch, from producer: any NotificationProducer) -> NotificationDemand
    /// How many notifications it has received so far, which is the sequence the next one
    /// gets. Read on the listener thread, which alone advances it.
    var received: UInt64 { get }
}

protocol NotificationBatch {
    var count: Int { get }
    /// A NOTIFY as PostgreSQL delivered it.
    mutating func append(channel: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer)
    /// A message of a durable channel, in offset order.
    mutating func append(durable channel: ChannelKey, offset: UInt64, payload: UnsafeRawBufferPointer)
    /// From here on `channel` is durable (its newest offset being `last`), or no longer.
    mutating func append(durability channel: ChannelKey, isDurable: Bool, last: UInt64)
}

enum NotificationDemand: Sendable, Equatable {
    case more
    case stop
}

/// The listener, as the receiver of notifications sees it.
protocol NotificationProducer: Sendable {
    func produceMore()
}
