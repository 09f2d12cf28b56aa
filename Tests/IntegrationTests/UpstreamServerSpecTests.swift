import BridgeTestSupport
import Foundation
import PostgresWebSockets
import Testing

/// postgres-websockets' own server and broadcaster specifications (test/ServerSpec.hs and
/// test/HasqlBroadcastSpec.hs of 0.12), with its secret, tokens and channel names, run
/// against this server configured as upstream runs (publish-to = listen-channel). Serialized:
/// the channel names are upstream's, shared by the tests.
@Suite(.serialized) struct UpstreamServerSpecTests {
    static let secret = "reallyreallyreallyreallyverysafe"
    /// {"mode":"rw"}
    static let rwToken =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoicncifQ.auy9z4-pqoVEAay9oMi1FuG7ux_C_9RQCH8-wZgej18"
    /// {"mode":"rw","channels":["test","secondary"]}
    static let testAndSecondaryToken =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoicnciLCJjaGFubmVscyI6WyJ0ZXN0Iiwic2Vjb25kYXJ5Il19.7tB2A9MhpY4tyqhfnHNy5FUYw4gwpKtL4UAHBXbNEz4"

    func withUpstreamServer(_ body: (TestServer) async throws -> Void) async throws {
        try await TestServer.with({
            $0.jwtSecret = Array(Self.secret.utf8)
            $0.channels.listenChannel = uniqueChannel("postgres-websockets-test-channel")
            $0.channels.publishTo = .listenChannel
        }) { server in try await body(server) }
    }

    func payload(_ text: String) throws -> JSONValue? {
        try JSONParser.parse(text)["payload"]
    }

    @Test("should be able to send messages to test server")
    func send() async throws {
        try await withUpstreamServer { server in
            let client = try await server.connect("/test/\(Self.rwToken)")
            try await client.send(text: "test data")
            #expect(try payload(try await client.nextText()) == .string("test data"))
        }
    }

    @Test("should be able to receive messages from test server")
    func receive() async throws {
        try await withUpstreamServer { server in
            let reader = try await server.connect("/test/\(Self.rwToken)")
            let sender = try await server.connect("/test/\(Self.rwToken)")
            try await sender.send(text: "test data")
            #expect(try payload(try await reader.nextText()) == .string("test data"))
        }
    }

    @Test("should be able to send messages to multiple channels in one shot")
    func sendToMany() async throws {
        try await withUpstreamServer { server in
            let test = try await server.connect("/test/\(Self.rwToken)")
            let secondary = try await server.connect("/secondary/\(Self.rwToken)")
            let sender = try await server.connect("/\(Self.testAndSecondaryToken)")
            try await sender.send(text: "test data")
            let first = try JSONParser.parse(try await test.nextText())
            let second = try JSONParser.parse(try await secondary.nextText())
            #expect(first["payload"] == .string("test data"))
            #expect(first["channel"] == .string("test"))
            #expect(second["payload"] == .string("test data"))
            #expect(second["channel"] == .string("secondary"))
        }
    }

    @Test("should be able to receive from multiple channels in one shot")
    func receiveFromMany() async throws {
        try await withUpstreamServer { server in
            let both = try await server.connect("/\(Self.testAndSecondaryToken)")
            try await both.send(text: "test data")
            let texts = [try await both.nextText(), try await both.nextText()]
            let received = try texts.map { try JSONParser.parse($0) }
            #expect(received.allSatisfy { $0["payload"] == .string("test data") })
            #expect(Set(received.compactMap { $0["channel"]?.stringValue }) == ["test", "secondary"])
        }
    }

    @Test("relay messages sent to the appropriate database channel")
    func relay() async throws {
        try await withUpstreamServer { server in
            let reader = try await server.connect("/test/\(Self.rwToken)")
            let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
            let message = #"{"channel": "test", "payload": "hello there"}"#
            try await db.notify(server.bridge.configuration.channels.listenChannel, message)
            #expect(try await reader.nextText() == message)
        }
    }
}
