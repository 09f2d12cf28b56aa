import NIOHTTP1
import Testing

@testable import PostgresWebSockets

private let secret = Array("a-test-secret-long-enough-for-hs256-in-every-library".utf8)
private let handshake = Handshake(verifier: JWTVerifier(secret: secret), allowedOrigins: ["https://app.example"])

private func token(_ claims: String) -> String {
    func b64(_ text: String) -> String { Base64.encode(Array(text.utf8), urlSafe: true, padded: false) }
    let input = b64(#"{"alg":"HS256","typ":"JWT"}"#) + "." + b64(claims)
    return input + "."
        + Base64.encode(JWTAlgorithm.hs256.sign(key: secret, message: input), urlSafe: true, padded: false)
}

private func head(_ path: String, _ extra: [(String, String)] = [], drop: Set<String> = []) -> RequestHead {
    var headers: [(String, String)] = [
        ("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
    ].filter { !drop.contains($0.0) }
    headers += extra
    var text = "GET \(path) HTTP/1.1\r\n"
    for (name, value) in headers { text += "\(name): \(value)\r\n" }
    text += "\r\n"
    return try! Array(text.utf8).withUnsafeBytes { try RequestHead.parse($0) }
}

private func refusal(_ head: RequestHead) -> Refusal? {
    if case .failure(let refusal) = handshake.authorize(head, now: 1_700_000_000) { return refusal }
    return nil
}

@Suite("Handshake.authorize")
struct HandshakeAuthorizationTests {
    @Test("RFC 6455's example key gets RFC 6455's accept value")
    func acceptValue() {
        #expect(Handshake.acceptValue(for: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test("a valid handshake on /<channel>/<jwt> is granted that channel; r mode reads it")
    func granted() throws {
        let result = try handshake.authorize(head("/chat/" + token(#"{"mode":"r"}"#)), now: 1_700_000_000).get()
        #expect(result.grant.channels == ["chat"])
        #expect(result.readChannels == [ChannelKey("chat")])
        #expect(result.acceptKey == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        let writer = try handshake.authorize(head("/chat/" + token(#"{"mode":"w"}"#)), now: 1_700_000_000).get()
        #expect(writer.readChannels.isEmpty, "a write-only socket reads nothing")
    }

    @Test("each refusal gets its status")
    func refusals() {
        let good = token(#"{"mode":"rw","channel":"chat"}"#)
        #expect(refusal(head("/" + good, drop: ["Connection"]))?.status == .badRequest)
        #expect(refusal(head("/" + good, drop: ["Sec-WebSocket-Key"]))?.status == .badRequest)
        #expect(
            refusal(head("/" + good, [("Sec-WebSocket-Version", "8")], drop: ["Sec-WebSocket-Version"]))?.status
                == .upgradeRequired)
        #expect(refusal(head("/" + good, [("Origin", "https://evil.example")]))?.status == .forbidden)
        #expect(refusal(head("/" + good, [("Origin", "HTTPS://APP.EXAMPLE")])) == nil, "origins compare without case")
        #expect(refusal(head("/a/b/" + good))?.status == .notFound)
        #expect(refusal(head("/chat/"))?.reason == "missing JWT")
        #expect(refusal(head("/chat/not.a.jwt"))?.status == .unauthorized)
        #expect(refusal(head("/other/" + good))?.reason == "channel not allowed by JWT")
        #expect(refusal(head("/%ZZ/" + good))?.status == .forbidden)
        #expect(refusal(head("/" + token(#"{"channel":"chat"}"#)))?.status == .forbidden)
    }
}
