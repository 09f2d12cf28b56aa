import NIOCore

/// An open socket, as its event loop's shard sees it. Every call comes on that loop.
protocol ShardMember: AnyObject {
    /// The channels it reads, each held on the shard since its handshake.
    var readChannels: [ChannelKey] { get }
    /// Writes a broadcast frame (without flushing).
    func deliver(_ frame: ByteBuffer)
    /// Flushes what `deliver` wrote since the last flush.
    func flushIfNeeded()
    /// The shard's timer, about once a second: pings, token expiry, close deadlines.
    func tick(now: NIODeadline, wallClock: Double)
    /// The queue to PostgreSQL drained, or the database went down: a writer paused for
    /// congestion may read again.
    func resumeIfPaused()
    /// Graceful shutdown: close with 1001.
    func shutDown()
    /// The shutdown's grace period is over: drop the connection.
    func abort()
}
