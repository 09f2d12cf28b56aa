import NIOHTTP1

/// The body of `GET /health`, the readiness probe: 200 while the listener is connected and
/// LISTENs every channel in use, 503 while it is not.
struct HealthReport {
    let databaseUp: Bool
    let connections: Int
    let listening: Int
    let queued: Int

    var response: HTTPResponse {
        let body: JSONValue = .object([
            ("status", .string(databaseUp ? "ok" : "unavailable")),
            ("database", .string(databaseUp ? "connected" : "unavailable")),
            ("connections", .number(String(connections))),
            ("listening", .number(String(listening))),
            ("queued", .number(String(queued))),
        ])
        return .json(databaseUp ? .ok : .serviceUnavailable, body)
    }
}
