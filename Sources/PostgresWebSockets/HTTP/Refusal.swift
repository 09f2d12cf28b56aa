import NIOHTTP1

/// Why a request is answered with something else than what it asked for: the one place
/// where each cause gets its HTTP status (and the headers that status needs). `Code` is a
/// struct so that causes can be added without breaking callers.
struct Refusal: Error, Equatable, CustomStringConvertible {
    struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        private init(_ name: String) { self.name = name }
        var description: String { name }

        /// Malformed HTTP, or a handshake without what RFC 6455 requires.
        static let badRequest = Code("bad_request")
        /// A token problem: missing, malformed, bad signature, expired, unsupported algorithm.
        static let unauthorized = Code("unauthorized")
        /// An authorization problem: mode, channel, origin.
        static let forbidden = Code("forbidden")
        static let notFound = Code("not_found")
        static let methodNotAllowed = Code("method_not_allowed")
        /// The request (or the LISTEN it waits for) took longer than `handshake-timeout`.
        static let timeout = Code("timeout")
        /// A WebSocket version other than 13.
        static let unsupportedWebSocketVersion = Code("unsupported_websocket_version")
        static let headTooLarge = Code("head_too_large")
        /// `max-connections` sockets are open.
        static let atCapacity = Code("at_capacity")
        /// The token needs a key that is not loaded yet: the JWKS URL has not answered since
        /// the server started.
        static let keysUnavailable = Code("keys_unavailable")
        /// `pgws.revoke` revoked tokens with these claims, until a time not yet reached.
        static let revoked = Code("revoked")
    }

    let code: Code
    /// One line for a person: the response body and the log's `refusal`.
    let reason: String

    init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    var description: String { "\(code): \(reason)" }

    var status: HTTPResponseStatus {
        switch code {
        case .unauthorized, .revoked: .unauthorized
        case .forbidden: .forbidden
        case .notFound: .notFound
        case .methodNotAllowed: .methodNotAllowed
        case .timeout: .requestTimeout
        case .unsupportedWebSocketVersion: .upgradeRequired
        case .headTooLarge: .requestHeaderFieldsTooLarge
        case .atCapacity, .keysUnavailable: .serviceUnavailable
        default: .badRequest
        }
    }

    var headers: [(String, String)] {
        switch code {
        case .methodNotAllowed: [("allow", "GET, HEAD")]
        case .unsupportedWebSocketVersion: [("sec-websocket-version", "13")]
        default: []
        }
    }

    var response: HTTPResponse {
        var response = HTTPResponse.text(status, reason)
        for (name, value) in headers { response.headers.add(name: name, value: value) }
        return response
    }
}
