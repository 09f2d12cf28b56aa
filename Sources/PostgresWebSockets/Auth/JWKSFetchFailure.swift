import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

#if canImport(Glibc)
    import Glibc
#endif

/// Why a JWKS fetch failed: one line for the log, with the HTTP status when there was one.
/// Reasons never hold the URL's user information or query, nor anything the response held
/// (key material): only statuses, limits and the transport's own words.
struct JWKSFetchFailure: Error, Equatable, Sendable {
    let reason: String
    var status: UInt? = nil

    static let truncated = JWKSFetchFailure(reason: "connection closed before the end of the response")

    static func timedOut(after timeout: TimeAmount) -> JWKSFetchFailure {
        JWKSFetchFailure(reason: "no complete answer within \(seconds(timeout)) s")
    }

    static func tooLong(limit: Int) -> JWKSFetchFailure {
        JWKSFetchFailure(reason: "response longer than \(limit) bytes")
    }

    /// A status other than 200. Redirects are named as such: they are never followed (one
    /// could lead from https to http), so the operator configures the final URL.
    static func status(_ code: UInt) -> JWKSFetchFailure {
        let reason =
            (300..<400).contains(code) ? "HTTP status \(code) (redirects are not followed)" : "HTTP status \(code)"
        return JWKSFetchFailure(reason: reason, status: code)
    }

    /// A transport, TLS or HTTP parsing error in one short line; a failure as it is.
    init(_ error: any Error) {
        if let failure = error as? JWKSFetchFailure {
            self = failure
        } else {
            self.init(reason: Self.describe(error))
        }
    }

    init(reason: String, status: UInt? = nil) {
        self.reason = reason
        self.status = status
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case ChannelError.connectTimeout(let timeout):
            return "no connection within \(seconds(timeout)) s"
        case let error as NIOConnectionError:
            if let first = error.connectionErrors.first { return describe(first.error) }
            return "cannot resolve the host name"
        case let error as IOError:
            return "network error: \(String(cString: strerror(error.errnoCode)))"
        case ChannelError.eof, ChannelError.ioOnClosedChannel, ChannelError.alreadyClosed,
            NIOSSLError.uncleanShutdown, HTTPParserError.invalidEOFState:
            return truncated.reason
        case NIOSSLError.handshakeFailed(let boringSSL):
            return "TLS handshake failed" + tlsReasons(boringSSL)
        case let error as NIOSSLExtraError where error == .failedToValidateHostname:
            return "TLS handshake failed: the certificate is not for this host"
        case let error as HTTPParserError:
            return "malformed HTTP response (\(error))"
        default:
            let text = String("\(error)".map { $0.isNewline ? " " : $0 })
            return "\(text.prefix(200))\(text.count > 200 ? "..." : "")"
        }
    }

    /// `: certificate verify failed` from BoringSSL's error stack (`Error: 268435581
    /// error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED at file:line`),
    /// empty when it says nothing.
    private static func tlsReasons(_ error: BoringSSLError) -> String {
        let stack: NIOBoringSSLErrorStack
        switch error {
        case .sslError(let errors), .unknownError(let errors), .invalidSNIName(let errors),
            .failedToSetALPN(let errors):
            stack = errors
        default:
            return ": \(error)"
        }
        let reasons = stack.compactMap { entry -> String? in
            let text = "\(entry)"
            guard let start = text.firstRange(of: "error:") else { return nil }
            let fields = text[start.upperBound...].split(separator: ":", maxSplits: 3)
            guard fields.count == 4 else { return nil }
            let reason = fields[3].prefix(while: { $0 != " " })
            return String(reason.lowercased().map { $0 == "_" ? " " : $0 })
        }
        return reasons.isEmpty ? "" : ": " + reasons.joined(separator: ", ")
    }

    /// `10`, `0.5`: a time limit as an operator wrote it.
    private static func seconds(_ amount: TimeAmount) -> String {
        let nanoseconds = amount.nanoseconds
        if nanoseconds % 1_000_000_000 == 0 { return "\(nanoseconds / 1_000_000_000)" }
        return "\(Double(nanoseconds) / 1e9)"
    }
}
