import NIOCore
import NIOHTTP1

/// A complete response to a plain HTTP request or a refused handshake. Every such
/// response closes the connection: the server keeps no idle HTTP connections around.
struct HTTPResponse {
    var status: HTTPResponseStatus
    var headers: HTTPHeaders = HTTPHeaders()
    var body: ByteBuffer

    init(status: HTTPResponseStatus, contentType: String, body: ByteBuffer) {
        self.status = status
        self.body = body
        headers.add(name: "content-type", value: contentType)
    }

    /// A one-line plain-text answer, as given to every refused handshake.
    static func text(_ status: HTTPResponseStatus, _ message: String) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "text/plain; charset=utf-8", body: ByteBuffer(string: message + "\n"))
    }

    static func json(_ status: HTTPResponseStatus, _ value: JSONValue) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", body: ByteBuffer(string: value.serialized))
    }

    /// The whole response as bytes, `connection: close` and `content-length` included. Written
    /// by hand: responses are few and fixed, and the HTTP encoder would cost every connection
    /// a pipeline handler.
    func serialized(includingBody: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 256 + body.readableBytes)
        buffer.writeString("HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\n")
        for (name, value) in headers {
            buffer.writeString("\(name): \(value)\r\n")
        }
        buffer.writeString("content-length: \(body.readableBytes)\r\nconnection: close\r\n\r\n")
        if includingBody {
            buffer.writeImmutableBuffer(body)
        }
        return buffer
    }
}
