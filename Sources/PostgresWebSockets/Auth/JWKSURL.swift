/// A JWKS URL as configured: checked at start, and shown in logs without what may be secret.
///
/// The HTTP client parses the URL itself; this only refuses early, with a clear line, what it
/// would refuse (or fetch from somewhere unexpected) later.
enum JWKSURL {
    /// Why `text` is not an http or https URL with a host, or nil when it is one.
    static func problem(with text: String) -> String? {
        guard let parts = split(text) else { return "must be an http:// or https:// URL" }
        guard parts.scheme == "http" || parts.scheme == "https" else {
            return "must be an http:// or https:// URL (the scheme is not http or https)"
        }
        guard text.utf8.allSatisfy({ $0 > 0x20 && $0 != 0x7F }) else {
            return "must not hold spaces or control characters"
        }
        let hostAndPort = host(of: parts.authority)
        let hostName =
            hostAndPort.hasPrefix("[")
            ? hostAndPort.prefix(while: { $0 != "]" }).dropFirst() : hostAndPort.prefix(while: { $0 != ":" })
        guard !hostName.isEmpty else { return "has no host" }
        return nil
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

    /// The URL as the HTTP client gets it: without user information, which goes in an
    /// `Authorization` header instead (`basicAuthorization`).
    static func withoutUserInfo(_ text: String) -> String {
        guard let parts = split(text), parts.authority.contains("@") else { return text }
        return "\(parts.scheme)://\(host(of: parts.authority))\(parts.rest)"
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
}
