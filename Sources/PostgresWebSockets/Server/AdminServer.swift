import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The operators' listener (`metrics-port`, on `metrics-host`, 127.0.0.1 unless set): `GET
/// /metrics` (Prometheus text), `GET /channels` (this server's channels and their sockets)
/// and, with presence on, `GET /channels/<name>/presence` (its members on every server).
/// Public clients reach the main port only, where these paths answer 404.
final class AdminServer: Service, Sendable {
    private let server: ServerContext
    private let group: any EventLoopGroup
    private let settings: MetricsSettings
    /// The bound port, or why binding failed.
    let bound: EventLoopPromise<Int>

    init(server: ServerContext, group: any EventLoopGroup, settings: MetricsSettings) {
        self.server = server
        self.group = group
        self.settings = settings
        self.bound = group.next().makePromise(of: Int.self)
    }

    func run() async throws {
        let server = self.server
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let pipeline = channel.pipeline.syncOperations
                        try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                        try pipeline.addHandler(AdminHTTPHandler(server: server))
                    }
                }
                .bind(host: FrontEnd.bindAddress(settings.host), port: settings.port ?? 0)
                .get()
        } catch {
            let failure = BindError(host: settings.host, port: settings.port ?? 0, underlying: error)
            bound.fail(failure)
            throw failure
        }
        let port = channel.localAddress?.port ?? 0
        bound.succeed(port)
        server.logger.log(
            .notice, "metrics and admin endpoints listening", [.host: "\(settings.host)", .port: "\(port)"])
        try? await gracefulShutdown()
        try? await channel.close()
    }
}

/// One request per connection (a scrape every few seconds needs no keep-alive); bodies are
/// ignored.
private final class AdminHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: ServerContext
    private var head: HTTPRequestHead? = nil

    init(server: ServerContext) {
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            answer(head, context: context)
        }
    }

    private func answer(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard head.method == .GET || head.method == .HEAD else {
            return write(.methodNotAllowed, "text/plain; charset=utf-8", "method not allowed\n", head, context)
        }
        if let channel = Self.presenceChannel(path) {
            return presence(of: channel, head, context)
        }
        guard path == "/metrics" || path == "/channels" else {
            return write(.notFound, "text/plain; charset=utf-8", "not found\n", head, context)
        }
        let server = self.server
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.makeFutureWithTask {
            let report = await MetricsReport.gather(from: server)
            return path == "/metrics" ? report.prometheusText(server) : report.channels.serialized + "\n"
        }.whenSuccess { body in
            let (handler, context) = loopBound.value
            let type = path == "/metrics" ? PrometheusText.contentType : "application/json"
            handler.write(.ok, type, body, head, context)
        }
    }

    /// The channel of `/channels/<name>/presence` (percent-encoded as in socket paths).
    static func presenceChannel(_ path: Substring) -> Substring? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0].isEmpty, parts[1] == "channels", parts[3] == "presence" else { return nil }
        return parts[2]
    }

    private func presence(of encoded: Substring, _ head: HTTPRequestHead, _ context: ChannelHandlerContext) {
        let text = "text/plain; charset=utf-8"
        guard let presence = server.presence else {
            return write(.notFound, text, "presence is not enabled on this server\n", head, context)
        }
        guard let bytes = percentDecode(encoded), let channel = String(validating: bytes, as: UTF8.self),
            ChannelName.problem(with: channel) == nil
        else {
            return write(.badRequest, text, "bad channel name\n", head, context)
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        presence.members(of: channel) { result in
            loopBound.eventLoop.execute {
                let (handler, context) = loopBound.value
                switch result {
                case .success(let members):
                    let body = JSONValue.object([("channel", .string(channel)), ("members", .array(members))])
                    handler.write(.ok, "application/json", body.serialized + "\n", head, context)
                case .failure(let failure):
                    handler.write(.serviceUnavailable, text, failure.reason + "\n", head, context)
                }
            }
        }
    }

    private func write(
        _ status: HTTPResponseStatus, _ contentType: String, _ body: String, _ request: HTTPRequestHead,
        _ context: ChannelHandlerContext
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "content-length", value: "\(body.utf8.count)")
        headers.add(name: "cache-control", value: "no-store")
        headers.add(name: "connection", value: "close")
        let response = HTTPResponseHead(version: request.version, status: status, headers: headers)
        context.write(wrapOutboundOut(.head(response)), promise: nil)
        if request.method != .HEAD {
            context.write(
                wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
