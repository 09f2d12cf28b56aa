import BridgeTestSupport
import Foundation
import NIOCore
import NIOPosix
import PostgresWebSockets
import Testing

/// Plain HTTP: the health probe and the static files of server-root.
@Suite struct HTTPEndpointTests {
    @Test func healthReportsConnectedDatabase() async throws {
        try await TestServer.with { server in
            let client = try await server.connect(channel: uniqueChannel(), mode: "r")
            let response = try await HTTPGet.fetch(port: server.port, path: "/health")
            #expect(response.status == 200)
            #expect(response.headers["content-type"] == "application/json")
            let body = try JSONParser.parse(response.body)
            #expect(body["status"] == .string("ok"))
            #expect(body["database"] == .string("connected"))
            #expect(body["connections"] == .number("1"))
            await client.disconnect()
        }
    }

    @Test func staticFilesAreServedFromRootOnly() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("pgws-root-\(UUID().uuidString)")
        try FileManager.default.createDirectory(
            at: root.appendingPathComponent("sub"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        try "<h1>demo</h1>".write(to: root.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
        try "body{}".write(to: root.appendingPathComponent("sub/style.css"), atomically: true, encoding: .utf8)
        let secret = root.deletingLastPathComponent().appendingPathComponent("pgws-secret-\(UUID().uuidString).txt")
        try "secret".write(to: secret, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: secret) }
        try FileManager.default.createSymbolicLink(
            at: root.appendingPathComponent("escape.txt"), withDestinationURL: secret)

        try await TestServer.with({ $0.server.rootPath = root.path }) { server in
            let index = try await HTTPGet.fetch(port: server.port, path: "/")
            #expect(index.status == 200)
            #expect(index.body == "<h1>demo</h1>")
            #expect(index.headers["content-type"]?.hasPrefix("text/html") == true)
            let css = try await HTTPGet.fetch(port: server.port, path: "/sub/style.css?v=1")
            #expect(css.status == 200)
            #expect(css.headers["content-type"]?.hasPrefix("text/css") == true)
            let secretName = secret.lastPathComponent
            for path in [
                "/../\(secretName)", "/sub/../../\(secretName)", "/%2e%2e/\(secretName)",
                "/sub/%2E%2E/%2E%2E/\(secretName)",
                "/escape.txt", "/missing.html", "/%00index.html", "/%zz",
            ] {
                let response = try await HTTPGet.fetch(port: server.port, path: path)
                #expect(response.status == 404, "\(path)")
                #expect(!response.body.contains("secret"), "\(path)")
            }
            let post = try await HTTPGet.fetch(port: server.port, path: "/", method: "POST")
            #expect(post.status == 405)
            #expect(post.headers["allow"] == "GET, HEAD")
        }
    }

    /// Load-balancer probes of upstream deployments expect 200 on a plain GET.
    @Test func withoutRootPlainRequestsGet200() async throws {
        try await TestServer.with { server in
            for path in ["/", "/index.html"] {
                let response = try await HTTPGet.fetch(port: server.port, path: path)
                #expect(response.status == 200)
                #expect(response.body.hasSuffix("\n"))
                #expect(response.body.filter { $0 == "\n" }.count == 1)
                #expect(response.body.contains("WebSocket"))
            }
        }
    }
}

/// A minimal HTTP/1.1 GET over a raw socket: the server answers and closes.
enum HTTPGet {
    struct Response {
        let status: Int
        let headers: [String: String]
        let body: String
    }

    static func fetch(port: Int, path: String, method: String = "GET", tls: WebSocketClient.TLS? = nil) async throws
        -> Response
    {
        let outcome = try await WebSocketClient.open(
            port: port, path: path,
            rawRequest: "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", tls: tls)
        guard case .refused(let answer) = outcome else { throw WaitTimeout(what: "an HTTP answer") }
        return Response(status: answer.status, headers: answer.headers, body: answer.body)
    }
}
