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

    init(keys: JWTKeyStore, allowedOrigins: Set<String>?) {
        self.keys = keys
        self.allowedOrigins = allowedOrigins
    }

    /// A handshake whose keys never change.
    init(verifier: JWTVerifier, allowedOrigins: Set<String>?) {
        self.init(keys: JWTKeyStore(fixed: verifier), allowedOrigins: allowedOrigins)
    }

    struct Authorized {
        let grant: Grant
        let token: VerifiedToken
        let acceptKey: String
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
        if let allowedOrigins, let origin = head.first("origin"), !allowedOrigins.contains(origin.lowercased()) {
            return .failure(Refusal(.forbidden, "origin not allowed"))
        }

        let requestedChannel: String?
        let tokenSegment: Substring
        let segments = head.path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        switch segments.count {
        case 1:
            requestedChannel = nil
            tokenSegment = segments[0]
        case 2:
            guard let bytes = percentDecode(segments[0]) else {
                return .failure(Refusal(.forbidden, "bad channel name: invalid percent-encoding"))
            }
            guard let name = String(validating: bytes, as: UTF8.self) else {
                return .failure(Refusal(.forbidden, "bad channel name: not UTF-8"))
            }
            requestedChannel = name
            tokenSegment = segments[1]
        default:
            return .failure(Refusal(.notFound, "expected /<jwt> or /<channel>/<jwt>"))
        }
        guard !tokenSegment.isEmpty else { return .failure(Refusal(.unauthorized, "missing JWT")) }
        guard let tokenBytes = percentDecode(tokenSegment), let token = String(validating: tokenBytes, as: UTF8.self)
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
        let grant: Grant
        do {
            grant = try Grant.authorize(claims: verified.claims, requestedChannel: requestedChannel)
        } catch {
            return .failure(Refusal(.forbidden, error.reason))
        }
        return .success(Authorized(grant: grant, token: verified, acceptKey: Self.acceptValue(for: keys[0])))
    }

    /// Sec-WebSocket-Accept: base64(SHA-1(key + GUID)), RFC 6455 4.2.2.
    static func acceptValue(for key: Substring) -> String {
        let input = Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = EVP_Digest(input, input.count, &digest, &length, EVP_sha1(), nil)
        precondition(ok == 1, "libcrypto SHA-1 failed")
        return Base64.encode(digest[0..<Int(length)])
    }

    static func switchingProtocols(acceptKey: String) -> String {
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: \(acceptKey)\r\n\r\n"
    }
}
