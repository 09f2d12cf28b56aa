import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// The HTTP client of the `JWKSFetcher`: one strict HTTP/1.1 GET of the JWKS URL per fetch,
/// over a connection of its own on the bridge's event loops, closed after it.
///
/// A connection is `ClientBootstrap` (happy eyeballs), for https a `NIOSSLClientHandler`
/// (the system's trust store plus the certificates of `jwks-ca-file`; the certificate must be
/// for the URL's host, which is also sent as SNI unless it is an IP address, then checked
/// against the certificate's IP addresses), NIOHTTP1's request encoder and response decoder,
/// and a `JWKSResponseCollector`, which sends the request, keeps the response within its
/// limits and ends the fetch. The request: `GET path?query`, `Host`, `Accept` JSON,
/// `Connection: close`, the URL's `user:password@` as `Authorization: Basic`; no
/// `Accept-Encoding` (no compression).
///
/// Refused, each a failed fetch with a one-line reason: any status but 200 (redirects are not
/// followed), a body over `maxBodyBytes`, a compressed body, a connection closed before the end
/// of the response, and anything taking longer than `timeout` in all (name resolution,
/// connect, TLS handshake, request and response). Nothing blocks an event loop: the host name
/// is resolved off the loops (NIO's resolver), the CA file is read at start.
struct JWKSHTTPClient: Sendable {
    let target: JWKSURL.Target
    let timeout: TimeAmount
    let maxBodyBytes: Int
    private let authorization: String?
    private let tls: NIOSSLContext?

    /// Checks the URL and reads `caFile`: a mistake stops start-up before any thread starts.
    init(settings: JWKSSettings) throws(ConfigurationError) {
        guard let target = JWKSURL.target(settings.url) else {
            let problem = JWKSURL.problem(with: settings.url) ?? "must be an http:// or https:// URL"
            throw ConfigurationError("\(ConfigurationKey.jwksURL.rawValue) \(problem)")
        }
        self.target = target
        self.timeout = TimeAmount(settings.fetchTimeout)
        self.maxBodyBytes = settings.maxResponseBytes
        self.authorization = JWKSURL.basicAuthorization(settings.url)
        let privateRoots = try settings.caFile.map { path throws(ConfigurationError) in try Self.certificates(in: path)
        }
        guard target.isHTTPS else {
            tls = nil
            return
        }
        var configuration = TLSConfiguration.makeClientConfiguration()  // full verification, system trust store
        if let privateRoots { configuration.additionalTrustRoots = [.certificates(privateRoots)] }
        do {
            tls = try NIOSSLContext(configuration: configuration)
        } catch {
            throw ConfigurationError("\(ConfigurationKey.jwksURL.rawValue): cannot set up TLS: \(error)")
        }
    }

    private static func certificates(in path: String) throws(ConfigurationError) -> [NIOSSLCertificate] {
        let key = ConfigurationKey.jwksCAFile.rawValue
        let bytes: [UInt8]
        switch readWholeFile(path) {
        case .success(let b): bytes = b
        case .failure(let error): throw ConfigurationError("\(key): \(error.message)")
        }
        guard let certificates = try? NIOSSLCertificate.fromPEMBytes(bytes), !certificates.isEmpty else {
            throw ConfigurationError("\(key): \(path) holds no PEM certificate")
        }
        return certificates
    }

    /// The one request of a fetch.
    var requestHead: HTTPRequestHead {
        var headers = HTTPHeaders()
        headers.add(name: "host", value: target.hostHeader)
        headers.add(name: "accept", value: "application/jwk-set+json, application/json")
        if let authorization { headers.add(name: "authorization", value: authorization) }
        headers.add(name: "connection", value: "close")
        return HTTPRequestHead(version: .http1_1, method: .GET, uri: target.path, headers: headers)
    }

    /// Fetches the URL once on `eventLoop`: its 200 response, or why not. Cancelling the task
    /// ends the fetch (and closes its connection).
    func get(on eventLoop: any EventLoop) async -> Result<JWKSHTTPResponse, JWKSFetchFailure> {
        let promise = eventLoop.makePromise(of: JWKSHTTPResponse.self)
        return await withTaskCancellationHandler {
            if !Task.isCancelled { start(promise) }
            do {
                return .success(try await promise.futureResult.get())
            } catch {
                return .failure(JWKSFetchFailure(error))
            }
        } onCancel: {
            promise.fail(JWKSFetchFailure(reason: "cancelled"))
        }
    }

    private func start(_ promise: EventLoopPromise<JWKSHTTPResponse>) {
        let eventLoop = promise.futureResult.eventLoop
        // The whole fetch's: connecting is bounded by it too (`connectTimeout`, which covers
        // name resolution), and the collector by what is left of it.
        let deadline = NIODeadline.now() + timeout
        let (tls, timeout, maxBodyBytes, request) = (self.tls, self.timeout, self.maxBodyBytes, requestHead)
        // SNI takes a host name only; an IP address is checked against the certificate's.
        let serverHostname = (try? SocketAddress(ipAddress: target.host, port: 0)) == nil ? target.host : nil
        ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tls {
                        try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverHostname))
                    }
                    // Bytes after the one response are dropped: the connection closes after it.
                    try pipeline.addHTTPClientHandlers(leftOverBytesStrategy: .dropBytes)
                }
            }
            .connect(host: target.host, port: target.port)
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    promise.fail(JWKSFetchFailure(error))
                case .success(let channel):
                    // However the fetch ends (response, failure, deadline, cancellation).
                    promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
                    do {
                        try channel.pipeline.syncOperations.addHandler(
                            JWKSResponseCollector(
                                request: request, maxBodyBytes: maxBodyBytes, deadline: deadline, timeout: timeout,
                                promise: promise))
                    } catch {
                        promise.fail(JWKSFetchFailure(error))
                    }
                }
            }
    }
}
