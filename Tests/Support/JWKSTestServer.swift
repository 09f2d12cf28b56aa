import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A small HTTP server on loopback that serves one document (a JWK Set) to a server under
/// test, which a test can change (rotate keys, change caching headers or the status), stop
/// (the URL becomes unreachable) and start again on the same port. It counts the requests.
///
/// Every response closes its connection, so a stopped server is really unreachable (no pooled
/// connection lives on) and every fetch is one request. TLS fits in `prepareChannel`: the TLS
/// variant (`startTLS`) adds its server handler there, before the HTTP handlers, and names
/// `localhost` in its URL, as its certificate does.
public final class JWKSTestServer: Sendable {
    public struct Response: Sendable {
        public var status: Int
        public var body: String
        public var headers: [(String, String)]

        public init(status: Int = 200, body: String, headers: [(String, String)] = []) {
            self.status = status
            self.body = body
            self.headers = headers
        }
    }

    private struct State {
        var response: Response
        var requests = 0
        var accepted = 0
        var authorizations: [String?] = []
        var port = 0
        var listening: (any Channel)? = nil
        var connections: [ObjectIdentifier: any Channel] = [:]
    }

    public let scheme: String
    /// The URL's host; the server listens on 127.0.0.1 whatever it is.
    public let host: String
    public let path = "/.well-known/jwks.json"
    private let group: any EventLoopGroup
    private let prepareChannel: @Sendable (any Channel) throws -> Void
    private let state: NIOLockedValueBox<State>

    public init(
        serving response: Response, scheme: String = "http", host: String = "127.0.0.1",
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        prepareChannel: @escaping @Sendable (any Channel) throws -> Void = { _ in }
    ) {
        self.scheme = scheme
        self.host = host
        self.group = group
        self.prepareChannel = prepareChannel
        self.state = NIOLockedValueBox(State(response: response))
    }

    /// A started server serving `response`.
    public static func start(serving response: Response) async throws -> JWKSTestServer {
        let server = JWKSTestServer(serving: response)
        try await server.start()
        return server
    }

    /// A started https server whose certificate is `pair`'s (`TestCertificates`), at
    /// `https://localhost:PORT/...`.
    public static func startTLS(serving response: Response, certificate pair: TestCertificates.Pair) async throws
        -> JWKSTestServer
    {
        let configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(pair.chainPEM).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: pair.keyPEM, format: .pem)))
        let context = try NIOSSLContext(configuration: configuration)
        let server = JWKSTestServer(serving: response, scheme: "https", host: "localhost") { channel in
            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
        }
        try await server.start()
        return server
    }

    public var port: Int { state.withLockedValue { $0.port } }
    public var url: String { "\(scheme)://\(host):\(port)\(path)" }
    /// Requests answered so far.
    public var requests: Int { state.withLockedValue { $0.requests } }
    /// Connections accepted so far, whether a request came on them or not (a client that
    /// refused the TLS certificate sends none).
    public var connectionsAccepted: Int { state.withLockedValue { $0.accepted } }
    /// The `Authorization` header of every request so far, in order.
    public var authorizations: [String?] { state.withLockedValue { $0.authorizations } }

    /// Serves `response` from the next request on.
    public func serve(_ response: Response) {
        state.withLockedValue { $0.response = response }
    }

    /// Listens on the port it had before (a free one the first time).
    public func start() async throws {
        let port = self.port
        let server = self
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    server.track(channel)
                    try server.prepareChannel(channel)
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(Handler(server: server))
                }
            }
            .bind(host: "127.0.0.1", port: port)
            .get()
        state.withLockedValue {
            $0.listening = channel
            $0.port = channel.localAddress?.port ?? port
        }
    }

    /// Closes the listening socket and every open connection: the URL refuses connections.
    public func stop() async {
        let (listening, connections) = state.withLockedValue { state in
            defer {
                state.listening = nil
                state.connections = [:]
            }
            return (state.listening, Array(state.connections.values))
        }
        try? await listening?.close()
        for connection in connections { try? await connection.close() }
    }

    private func track(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        state.withLockedValue {
            $0.connections[id] = channel
            $0.accepted += 1
        }
        channel.closeFuture.whenComplete { [state] _ in
            _ = state.withLockedValue { $0.connections.removeValue(forKey: id) }
        }
    }

    fileprivate func answer(_ request: HTTPRequestHead) -> Response {
        state.withLockedValue {
            $0.requests += 1
            $0.authorizations.append(request.headers.first(name: "authorization"))
            return $0.response
        }
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let server: JWKSTestServer
        var request: HTTPRequestHead?

        init(server: JWKSTestServer) { self.server = server }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                request = head
                return
            case .body:
                return
            case .end:
                break
            }
            guard let request else { return }
            let response = server.answer(request)
            var headers = HTTPHeaders(response.headers)
            headers.replaceOrAdd(name: "content-type", value: "application/json")
            headers.replaceOrAdd(name: "content-length", value: "\(response.body.utf8.count)")
            headers.replaceOrAdd(name: "connection", value: "close")
            let head = HTTPResponseHead(
                version: .http1_1, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: response.body)))), promise: nil)
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                loopBound.value.close(promise: nil)
            }
        }
    }
}
