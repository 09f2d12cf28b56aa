import BridgeTestSupport
import Foundation
import PostgresWebSockets
import Testing

/// `/metrics` and `/channels` on the operators' listener, read as Prometheus and a person
/// would, while real sockets come, read, write and are refused.
@Suite struct MetricsTests {
    /// The samples of a scrape, keyed `name{label="value",...}` (labels sorted), as
    /// prometheus-client's own parser (PyPI) reads the text.
    static func scrape(_ port: Int) async throws -> [String: Double] {
        let response = try await HTTPGet.fetch(port: port, path: "/metrics")
        #expect(response.status == 200)
        #expect(response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("pgws-metrics-\(UUID().uuidString)")
        try response.body.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let script = """
            import json, sys
            from prometheus_client.parser import text_string_to_metric_families
            samples = {}
            for family in text_string_to_metric_families(open(sys.argv[1]).read()):
                assert family.type in ("counter", "gauge", "histogram"), family
                for s in family.samples:
                    labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
                    samples[s.name + ("{%s}" % labels if labels else "")] = s.value
            print(json.dumps(samples))
            """
        let output = try await ChildProcess.run(
            ["python3", "-c", script, file.path], in: FileManager.default.temporaryDirectory, timeout: patience(30))
        #expect(output.status == 0, "\(output.stderr)\n\(response.body)")
        guard case .object(let members) = try JSONParser.parse(output.stdout) else { return [:] }
        var samples: [String: Double] = [:]
        for (key, value) in members { samples[key] = value.doubleValue }
        return samples
    }

    @Test func metricsMoveWithWhatSocketsDo() async throws {
        try await TestServer.with({ $0.metrics.port = 0 }) { server in
            let port = try #require(try await server.bridge.metricsPort())
            let before = try await Self.scrape(port)
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            let channel = uniqueChannel()
            let reader = try await server.connect(channel: channel, mode: "r")
            let writer = try await server.connect(channel: channel, mode: "w")
            let v1 = try await WebSocketClient.connectV1(
                port: server.port, path: "/", token: TestTokens.mint(mode: "r", channel: channel))
            try await v1.send(json: #"{"type":"subscribe","channel":"\#(channel)"}"#)
            _ = try await v1.next(type: "subscribed")
            let stream = try await EventStreamClient.open(
                port: server.port, path: "/\(channel)/\(TestTokens.mint(mode: "r"))")
            #expect(stream.status == 200)
            guard case .refused = try await server.open("/\(channel)/not-a-token") else {
                Issue.record("a malformed token was accepted")
                return
            }
            for text in ["one", "two"] { try await db.notify(channel, text) }
            #expect(try await reader.nextText() == "one")
            #expect(try await reader.nextText() == "two")
            for text in ["three", "four", "five"] { try await writer.send(text: text) }
            for _ in 0..<3 { _ = try await reader.nextText() }

            var after: [String: Double] = [:]
            try await waitUntil(timeout: 10, "the three messages counted as committed", every: 0.1) {
                after = try await Self.scrape(port)
                return after["pgws_client_messages_committed_total"]
                    == (before["pgws_client_messages_committed_total"] ?? 0) + 3
            }
            func grew(_ name: String) -> Double { (after[name] ?? 0) - (before[name] ?? 0) }
            #expect(after[#"pgws_open_sockets{protocol="raw"}"#] == 2)
            #expect(after[#"pgws_open_sockets{protocol="pgws.v1"}"#] == 1)
            #expect(after[#"pgws_open_sockets{protocol="sse"}"#] == 1)
            #expect(grew(#"pgws_handshakes_total{outcome="accepted"}"#) == 4)
            #expect(grew(#"pgws_handshakes_total{outcome="unauthorized"}"#) == 1)
            #expect(grew("pgws_client_messages_total") == 3)
            // Five notifications, each to the raw reader, the v1 socket and the stream.
            #expect(grew("pgws_deliveries_total") == 15, "\(after)")
            #expect(grew("pgws_delivered_bytes_total") > 15 * 3)
            // Once per notification and event loop with a reader of it.
            #expect((5...10).contains(grew("pgws_delivery_latency_seconds_count")), "\(after)")
            #expect(grew("pgws_notify_batch_size_count") >= 1)
            #expect(after["pgws_listener_up"] == 1)
            #expect((after["pgws_listened_channels"] ?? 0) >= 2, "the listen channel and this one")
            #expect(after["pgws_notify_queue_depth"] == 0)
            #expect(after["pgws_database_outage_seconds_total"] == 0)
            let buckets = after.keys.filter { $0.hasPrefix("pgws_delivery_latency_seconds_bucket") }
            #expect(
                after[#"pgws_delivery_latency_seconds_bucket{le="+Inf"}"#]
                    == after["pgws_delivery_latency_seconds_count"])
            #expect(buckets.count == 13)

            let channels = try JSONParser.parse(try await HTTPGet.fetch(port: port, path: "/channels").body)
            guard case .array(let listed) = channels["channels"] ?? .null else {
                Issue.record("no channels array: \(channels)")
                return
            }
            #expect(listed.contains(.object([("name", .string(channel)), ("sockets", .number("3"))])), "\(channels)")
            #expect(try await HTTPGet.fetch(port: port, path: "/nothing").status == 404)
        }
    }

    @Test func thePublicPortServesNeitherMetricsNorAdminEndpoints() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("pgws-root-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        try "<html></html>".write(to: root.appendingPathComponent("index.html"), atomically: true, encoding: .utf8)
        try await TestServer.with({
            $0.metrics.port = 0
            $0.server.rootPath = root.path
        }) { server in
            for path in ["/metrics", "/channels", "/channels/x/presence"] {
                #expect(try await HTTPGet.fetch(port: server.port, path: path).status == 404, "\(path)")
            }
            let port = try #require(try await server.bridge.metricsPort())
            #expect(port != server.port)
            #expect(try await HTTPGet.fetch(port: port, path: "/metrics").status == 200)
        }
        try await TestServer.with { server in
            let port = try await server.bridge.metricsPort()
            #expect(port == nil, "off unless metrics-port is set")
        }
    }
}
