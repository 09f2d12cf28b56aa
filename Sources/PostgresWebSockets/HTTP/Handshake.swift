import COpenSSL

/// The checks of a WebSocket handshake, from the request head to an authorized socket:
/// RFC 6455's requirements, the origin, the URL form, the token and its grants. Pure but for
/// telling the key store about a `kid` no key has: the connection slot and the LISTEN are
/// taken afterwards by the `HTTPHandler`.
struct Handshake {
    /// Holds the verifier of the moment: keys fetched from a JWKS URL change over time.
    let keys: JWTKeyStore
    /// Lowercased; nil allows every origin.
    let allowedOrigins: Set<String>?
    /// Tokens whose claims match are refused (`pgws.revoke`).
    let revocations: Revocations

    /// The subprotocol a client offers to say it speaks postgres-websockets' own protocol.
    static let rawProtocol = "postgres-websockets"
    /// A subprotocol entry carrying the token: `bearer.<jwt>` (browsers can set subprotocols,
    /// not headers). Never echoed, never logged.
    static let bearerPrefix = "bearer."

    init(keys: JWTKeyStore, allowedOrigins: Set<String>?, revocations: Revocations = Revocations()) {
        self.keys = keys
        self.allowedOrigins = allowedOrigins
        self.revocations = revocations
    }

    /// A handshake whose keys never change.
    init(verifier: JWTVerifier, allowedOrigins: Set<String>?, revocations: Revocations = Revocations()) {
        self.init(keys: JWTKeyStore(fixed: verifier), allowedOrigins: allowedOrigins, revocations: revocations)
    }

    struct Authorized {
        let grant: Grant
        let token: VerifiedToken
        let acceptKey: String
        /// Selected for the 101, when the client offered it.
        let subprotocol: String?
        /// `pgws.v1` when the client offered it, else postgres-websockets' raw protocol.
        let encoding: FrameEncoding
        /// The channels the socket receives notifications on (none for write-only sockets).
        var readChannels: [ChannelKey] {
            grant.mode.contains(.read) ? grant.channels.map(ChannelKey.init) : []
        }
    }

    func authorize(_ head: RequestHead, now: Double) -> Result<Authorized, Refusal> {
        guard head.method == "GET", head.minorVersion == 1 else {
            return .failure(Refusal(.badRequest, "a WebSocket handshake must use GET and HTTP/1.1"))
        }
        guard head.hasToken("connection", "upgrade") else {
            return .failure(Refusal(.badRequest, "missing Connection: Upgrade"))
        }
        let versions = head.values("sec-websocket-version")
        guard versions.count == 1, versions[0] == "13" else {
            return .failure(Refusal(.unsupportedWebSocketVersion, "unsupported WebSocket version: use 13"))
        }
        let keys = head.values("sec-websocket-key")
        guard keys.count == 1, Base64.decode(keys[0].utf8)?.count == 16 else {
            return .failure(Refusal(.badRequest, "missing or invalid Sec-WebSocket-Key"))
        }
        let offered = head.listValues("sec-websocket-protocol")
        let structured = offered.contains { $0 == V1Protocol.name }
        let bearerEntries = offered.filter { $0.hasPrefix(Self.bearerPrefix) }.map {
            $0.dropFirst(Self.bearerPrefix.count)
        }
        return authorizeToken(head, now: now, bearerEntries: bearerEntries, structured: structured).map {
            grant, token in
            let subprotocol =
                structured ? V1Protocol.name : offered.contains { $0 == Self.rawProtocol } ? Self.rawProtocol : nil
            return Authorized(
                grant: grant, token: token, acceptKey: Self.acceptValue(for: keys[0]), subprotocol: subprotocol,
                encoding: structured ? .v1 : .raw)
        }
    }

    /// An event stream (`Accept: text/event-stream`): `GET /<channel>/<jwt>`, or `/<channel>`
    /// with `Authorization: Bearer`. Refused as handshakes are, and with 403 for a token whose
    /// mode does not read.
    func authorizeEventStream(_ head: RequestHead, now: Double) -> Result<Authorized, Refusal> {
        authorizeToken(head, now: now, bearerEntries: [], structured: false).flatMap { grant, token in
            guard grant.channels.count == 1, head.path.dropFirst().contains("/") || head.first("authorization") != nil
            else {
                return .failure(
                    Refusal(.notFound, "an event stream is /<channel>/<jwt> or /<channel> with a bearer token"))
            }
            guard grant.mode.contains(.read) else {
                return .failure(Refusal(.forbidden, "the token's mode does not read"))
            }
            return .success(Authorized(grant: grant, token: token, acceptKey: "", subprotocol: nil, encoding: .sse))
        }
    }

    /// The origin, the token (from the URL, a bearer subprotocol entry or an Authorization
    /// header: exactly one) and its grant for the URL's channel.
    private func authorizeToken(
        _ head: RequestHead, now: Double, bearerEntries: [Substring], structured: Bool
    ) -> Result<(Grant, VerifiedToken), Refusal> {
        if let allowedOrigins, let origin = head.first("origin"), !allowedOrigins.contains(origin.lowercased()) {
            return .failure(Refusal(.forbidden, "origin not allowed"))
        }
        var headerTokens = bearerEntries
        for value in head.values("authorization") {
            let parts = value.split(byte: UInt8(ascii: " "), maxSplits: 1, omittingEmpty: true)
            if parts.count == 2, RequestHead.equalsIgnoringCase(parts[0], "bearer") {
                headerTokens.append(parts[1].trimming())
            }
        }
        guard headerTokens.count <= 1 else {
            return .failure(
                Refusal(
                    .badRequest,
                    "more than one token: give it in the URL, a bearer subprotocol or an Authorization header"))
        }

        let segments = head.path.dropFirst().split(byte: UInt8(ascii: "/"), omittingEmpty: false)
        let channelSegment: Substring?
        let tokenText: Substring
        // `pgws.v1` at `/` with the token in a header opens with no channel: it subscribes itself.
        let openNothing = structured && !headerTokens.isEmpty && segments == [""]
        if let headerToken = headerTokens.first {
            // The token came in a header: the path is `/` (every claimed channel) or `/<channel>`.
            switch segments.count {
            case 1:
                channelSegment = segments[0].isEmpty ? nil : segments[0]
            case 2:
                return .failure(
                    Refusal(
                        .badRequest,
                        "more than one token: give it in the URL, a bearer subprotocol or an Authorization header"))
            default:
                return .failure(Refusal(.notFound, "expected / or /<channel> with the token in a header"))
            }
            tokenText = headerToken
        } else {
            switch segments.count {
            case 1:
                channelSegment = nil
                tokenText = segments[0]
            case 2:
                channelSegment = segments[0]
                tokenText = segments[1]
            default:
                return .failure(Refusal(.notFound, "expected /<jwt> or /<channel>/<jwt>"))
            }
        }
        var requestedChannel: String? = nil
        if let channelSegment {
            guard let bytes = percentDecode(channelSegment) else {
                return .failure(Refusal(.forbidden, "bad channel name: invalid percent-encoding"))
            }
            guard let name = String(validating: bytes, as: UTF8.self) else {
                return .failure(Refusal(.forbidden, "bad channel name: not UTF-8"))
            }
            requestedChannel = name
        }
        guard !tokenText.isEmpty else { return .failure(Refusal(.unauthorized, "missing JWT")) }
        guard let tokenBytes = percentDecode(tokenText), let token = String(validating: tokenBytes, as: UTF8.self)
        else {
            return .failure(Refusal(.unauthorized, "malformed JWT"))
        }

        let verified: VerifiedToken
        let current = self.keys.current
        do {
            verified = try current.verifier.verify(Substring(token), now: now)
        } catch {
            // The fetched keys may be stale: the store's fetcher decides whether to fetch again.
            if error.keyMiss == .unknownKid { self.keys.unknownKeySeen() }
            // Before the JWKS URL first answers, a token the keys at hand cannot take may be
            // one its keys would: "try again", not "invalid".
            if current.awaitingFetchedKeys, error.keyMiss != .none {
                return .failure(Refusal(.keysUnavailable, "signing keys not loaded yet"))
            }
            return .failure(Refusal(.unauthorized, error.reason))
        }
        if revocations.isRevoked(verified.claims, now: now) {
            return .failure(Refusal(.revoked, "token revoked"))
        }
        let grant: Grant
        do {
            grant = try Grant.authorize(
                claims: verified.claims, requestedChannel: requestedChannel, openNothing: openNothing)
        } catch {
            return .failure(Refusal(.forbidden, error.reason))
        }
        return .success((grant, verified))
    }

    /// Sec-WebSocket-Accept: base64(SHA-1(key + GUID)), RFC 6455 4.2.2.
    static func acceptValue(for key: Substring) -> String {
        Base64.encode(Digest.sha1(Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
    }

    static func switchingProtocols(acceptKey: String, subprotocol: String?) -> String {
        let selected = subprotocol.map { "sec-websocket-protocol: \($0)\r\n" } ?? ""
        return
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: \(acceptKey)\r\n\(selected)\r\n"
    }
}
