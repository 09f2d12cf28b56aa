import NIOCore

/// A NOTIFY received from PostgreSQL, already encoded as the WebSocket text frame that
/// every reading socket of its channel will be sent. One buffer, shared by all of them.
public struct Notification: Sendable {
    public let channel: String
    public let frame: ByteBuffer
}
