/// A JWKS URL as configured: checked at start, split into what the `JWKSHTTPClient` connects
/// to and asks for, and shown in logs without what may be secret.
enum JWKSURL {
    /// Where a fetch goes and what it asks for: the URL without user information or fragment.
    struct Target: Equatable, Sendable {
        /// `http` or `https`.
        let scheme: String
        /// What is connected to: the host name, or an IP address without its brackets.
        let host: String
        let port: Int
        /// The `Host` header: the URL's host and port as written, without user information.
        let hostHeader: String
        /// The request target: the path (`/` when empty) and the query.
        let path: String

        var isHTTPS: Bool { scheme == "https" }
    }

    /// Why `text` is not an http or https URL with a host, or nil when it is one.
    static func problem(with text: String) -> String? {
        guard let parts = split(text) else { return "must be an http:// or https:// URL" }
        guard parts.scheme == "http" || parts.scheme == "https" else {
            return "must be an http:// or https:// URL (the scheme is not http or https)"
        }
        guard text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return "must not hold spaces, control or non-ASCII characters (percent-encode them)"
        }
        let hostAndPort = host(of: parts.authority)
        let name = hostName(of: hostAndPort)
        guard !name.isEmpty else { return "has no host" }
        guard port(of: hostAndPort, scheme: parts.scheme) != nil else {
            return "has a port that is not a number from 1 to 65535"
        }
        return nil
    }

    /// Host, port, `Host` header and request target of a URL that `problem(with:)` accepts;
    /// nil for any other.
    static func target(_ text: String) -> Target? {
        guard problem(with: text) == nil, let parts = split(text) else { return nil }
        let hostAndPort = host(of: parts.authority)
        guard let port = port(of: hostAndPort, scheme: parts.scheme) else { return nil }
        let name = hostName(of: hostAndPort)
        let pathAndQuery = parts.rest.prefix(while: { $0 != "#" })
        return Target(
            scheme: parts.scheme, host: String(name), port: port,
            hostHeader: String(hostAndPort.hasSuffix(":") ? hostAndPort.dropLast() : hostAndPort),
            path: pathAndQuery.hasPrefix("/") ? String(pathAndQuery) : "/" + pathAndQuery)
    }

    /// What logs show of a URL: scheme, host, port and path. User information (`user:password@`)
    /// is left out, and so are the query and fragment, which may carry an API key: a log line
    /// never holds a credential.
    static func redacted(_ text: String) -> String {
        guard let parts = split(text) else { return "(unparsable URL)" }
        let query = parts.rest.contains(where: { $0 == "?" || $0 == "#" }) ? "?..." : ""
        let path = parts.rest.prefix(while: { $0 != "?" && $0 != "#" })
        return "\(parts.scheme)://\(host(of: parts.authority))\(path)\(query)"
    }

    /// `Basic` credentials (RFC 7617) from the URL's `user:password@`, percent-decoded; nil
    /// without user information.
    static func basicAuthorization(_ text: String) -> String? {
        guard let parts = split(text), let at = parts.authority.lastIndex(of: "@") else { return nil }
        guard let userInfo = percentDecode(parts.authority[..<at]) else { return nil }
        return "Basic "
            + Base64.encode(userInfo.contains(UInt8(ascii: ":")) ? userInfo : userInfo + [UInt8(ascii: ":")])
    }

    /// `scheme://authority rest`, the scheme lowercased; nil without `://`.
    private static func split(_ text: String) -> (scheme: String, authority: Substring, rest: Substring)? {
        guard let separator = text.firstRange(of: "://") else { return nil }
        let scheme = text[..<separator.lowerBound]
        guard !scheme.isEmpty, scheme.unicodeScalars.allSatisfy({ $0.isASCII && $0.properties.isAlphabetic }) else {
            return nil
        }
        let afterScheme = text[separator.upperBound...]
        let authorityEnd =
            afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? afterScheme.endIndex
        return (scheme.lowercased(), afterScheme[..<authorityEnd], afterScheme[authorityEnd...])
    }

    /// Host and port: the authority after its last `@`.
    private static func host(of authority: Substring) -> Substring {
        authority.lastIndex(of: "@").map { authority[authority.index(after: $0)...] } ?? authority
    }

    /// The host of `host:port` or `[v6]:port`, without brackets.
    private static func hostName(of hostAndPort: Substring) -> Substring {
        hostAndPort.hasPrefix("[")
            ? hostAndPort.prefix(while: { $0 != "]" }).dropFirst() : hostAndPort.prefix(while: { $0 != ":" })
    }

    /// The port after the host (`[v6]:port` or `name:port`), the scheme's when there is none
    /// or it is empty; nil when it is not a number from 1 to 65535.
    private static func port(of hostAndPort: Substring, scheme: String) -> Int? {
        let afterHost =
            hostAndPort.hasPrefix("[")
            ? hostAndPort.drop(while: { $0 != "]" }).dropFirst() : hostAndPort.drop(while: { $0 != ":" })
        guard !afterHost.isEmpty else { return scheme == "https" ? 443 : 80 }
        guard afterHost.first == ":" else { return nil }  // "[::1]x"
        let digits = afterHost.dropFirst()
        guard !digits.isEmpty else { return scheme == "https" ? 443 : 80 }
        guard digits.count <= 5, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let port = Int(digits),
            (1...65535).contains(port)
        else { return nil }
        return port
    }
}
