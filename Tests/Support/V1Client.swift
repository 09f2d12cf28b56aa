import Foundation
import PostgresWebSockets

/// `pgws.v1` over the test WebSocket client: JSON frames in and out.
extension WebSocketClient {
    /// Opens a `pgws.v1` socket; `token` goes in a `bearer.` subprotocol entry unless it is
    /// already in `path`.
    public static func connectV1(port: Int, path: String, token: String? = nil) async throws -> WebSocketClient {
        var offered = "pgws.v1"
        if let token { offered += ", bearer.\(token)" }
        return try await connect(port: port, path: path, headers: [("Sec-WebSocket-Protocol", offered)])
    }

    /// Sends one JSON object, written exactly as given.
    public func send(json: String) async throws {
        try await send(text: json)
    }

    /// The next frame as JSON, skipping pings and pongs.
    public func nextJSON(timeout: Double = 10) async throws -> JSONValue {
        try JSONParser.parse(try await nextText(timeout: timeout))
    }

    /// Skips frames until one of `type` arrives (failing on a timeout).
    public func next(type: String, timeout: Double = 10) async throws -> JSONValue {
        let deadline = Deadline(seconds: timeout)
        while true {
            let frame = try await nextJSON(timeout: try deadline.remaining())
            if frame["type"] == .string(type) { return frame }
        }
    }
}
