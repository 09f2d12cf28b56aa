import NIOCore
import NIOHTTP1

/// What a JWKS fetch got: a 200 response, its headers (`Cache-Control`, `Age`) and whole body.
struct JWKSHTTPResponse: Sendable {
    let status: UInt
    let headers: HTTPHeaders
    let body: ByteBuffer
}

/// The last handler of a `JWKSHTTPClient` connection, after NIOHTTP1's request encoder and
/// response decoder: sends the one GET, collects the one response and completes `promise`
/// with it or with a `JWKSFetchFailure`, then closes the connection.
///
/// Strict by design: only a 200 is a response (any other status fails at its head, body
/// unread; a 3xx is not followed), a body is refused as soon as it would exceed
/// `maxBodyBytes` (by its `Content-Length`, or by what arrived: nothing more is buffered), a
/// compressed body is refused (none is asked for), a connection that closes or fails before
/// the end of the response fails, and so does `deadline` (the whole fetch's, connect and TLS
/// included, since the client computes it before connecting).
/// Chunked and `Content-Length` bodies both work, and a body delimited by the end of the
/// connection. Whatever arrives after the response (or after a failure) is ignored.
final class JWKSResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private enum State {
        case waitingForHead
        case readingBody(HTTPResponseHead, ByteBuffer)
        case finished
    }

    private let request: HTTPRequestHead
    private let maxBodyBytes: Int
    private let deadline: NIODeadline
    private let timeout: TimeAmount
    private let promise: EventLoopPromise<JWKSHTTPResponse>
    private var state = State.waitingForHead
    private var requestSent = false
    private var timer: Scheduled<Void>?

    /// `timeout` is the whole fetch's limit, which `deadline` ends (for the failure's reason).
    init(
        request: HTTPRequestHead, maxBodyBytes: Int, deadline: NIODeadline, timeout: TimeAmount,
        promise: EventLoopPromise<JWKSHTTPResponse>
    ) {
        self.request = request
        self.maxBodyBytes = maxBodyBytes
        self.deadline = deadline
        self.timeout = timeout
        self.promise = promise
    }

    func handlerAdded(context: ChannelHandlerContext) {
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.finish(.failure(.timedOut(after: self.timeout)), context: context)
        }
        // Added once connected (the client) or before (tests): the request goes out either way,
        // once. Over TLS, NIOSSL holds it until the handshake is done.
        if context.channel.isActive { sendRequest(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        sendRequest(context: context)
        context.fireChannelActive()
    }

    private func sendRequest(context: ChannelHandlerContext) {
        guard !requestSent else { return }
        requestSent = true
        context.write(wrapOutboundOut(.head(request)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (state, unwrapInboundIn(data)) {
        case (.waitingForHead, .head(let head)):
            guard head.status.code == 200 else {
                return finish(.failure(.status(head.status.code)), context: context)
            }
            if let encoding = head.headers.first(name: "content-encoding"), encoding.lowercased() != "identity" {
                return finish(
                    .failure(JWKSFetchFailure(reason: "compressed response (content-encoding was not asked for)")),
                    context: context)
            }
            var expected = 0
            if let length = head.headers.first(name: "content-length") {
                // The decoder has checked it is a number; one too large to be an Int is too long.
                guard let length = Int(length), length <= maxBodyBytes else {
                    return finish(.failure(.tooLong(limit: maxBodyBytes)), context: context)
                }
                expected = length
            }
            state = .readingBody(head, context.channel.allocator.buffer(capacity: expected))
        case (.readingBody(let head, var body), .body(let part)):
            guard part.readableBytes <= maxBodyBytes - body.readableBytes else {
                return finish(.failure(.tooLong(limit: maxBodyBytes)), context: context)
            }
            state = .finished  // no copy of the buffer while it grows
            body.writeImmutableBuffer(part)
            state = .readingBody(head, body)
        case (.readingBody(let head, let body), .end):
            finish(
                .success(JWKSHTTPResponse(status: head.status.code, headers: head.headers, body: body)),
                context: context)
        case (.finished, _):
            break  // after the response or a failure: ignored, the connection is closing
        case (.waitingForHead, .body), (.waitingForHead, .end), (.readingBody, .head):
            finish(.failure(JWKSFetchFailure(reason: "malformed HTTP response")), context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(JWKSFetchFailure(error)), context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(.truncated), context: context)
        context.fireChannelInactive()
    }

    private func finish(_ result: Result<JWKSHTTPResponse, JWKSFetchFailure>, context: ChannelHandlerContext) {
        if case .finished = state { return }
        state = .finished
        timer?.cancel()
        timer = nil
        promise.completeWith(result.mapError { $0 as any Error })
        context.close(promise: nil)
    }
}
