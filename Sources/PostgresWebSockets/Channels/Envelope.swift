/// The JSON envelope that postgres-websockets puts around every message it NOTIFYs:
/// `{"event":E,"channel":C,"payload":P,"claims":{...claims,"message_delivered_at":T}}`.
public enum Envelope {
    public enum Event: String, Sendable {
        case websocketMessage = "WebsocketMessage"
        case connectionOpen = "ConnectionOpen"
        case connectionClose = "ConnectionClose"
    }

    /// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
    public static let maxPayloadBytes = 7999

    /// The claims object without its closing brace, ready for `message_delivered_at`:
    /// `{"mode":"rw",` or `{`. Computed once per socket, reused for every message.
    public static func claimsPrefix(_ claims: JSONValue) -> [UInt8] {
        var writer = JSONWriter(capacity: 128)
        writer.raw("{")
        if case .object(let members) = claims {
            for member in members where member.key != "message_delivered_at" {
                writer.string(member.key)
                writer.raw(":")
                writer.value(member.value)
                writer.raw(",")
            }
        }
        return writer.bytes
    }

    /// The claims object back from its prefix (without `message_delivered_at`).
    static func claims(fromPrefix prefix: [UInt8]) -> [UInt8] {
        var object = prefix
        if object.last == UInt8(ascii: ",") { object.removeLast() }
        object.append(UInt8(ascii: "}"))
        return object
    }

    /// Builds one envelope. `payload` must be valid UTF-8.
    public static func encode(
        event: Event,
        channel: String,
        payload: UnsafeRawBufferPointer,
        claimsPrefix: [UInt8],
        deliveredAtMicroseconds: Int64
    ) -> [UInt8] {
        var writer = JSONWriter(capacity: payload.count + claimsPrefix.count + channel.utf8.count + 110)
        writer.raw("{\"event\":\"")
        writer.raw(utf8: event.rawValue)
        writer.raw("\",\"channel\":")
        writer.string(channel)
        writer.raw(",\"payload\":")
        writer.string(utf8: payload)
        writer.raw(",\"claims\":")
        writer.raw(claimsPrefix)
        writer.raw("\"message_delivered_at\":")
        writer.fixedPoint(deliveredAtMicroseconds, decimals: 6)
        writer.raw("}}")
        return writer.bytes
    }

    public static func encode(
        event: Event, channel: String, payload: String, claimsPrefix: [UInt8], deliveredAtMicroseconds: Int64
    ) -> [UInt8] {
        var payload = payload
        return payload.withUTF8 {
            encode(
                event: event, channel: channel, payload: UnsafeRawBufferPointer($0),
                claimsPrefix: claimsPrefix, deliveredAtMicroseconds: deliveredAtMicroseconds)
        }
    }

    /// Seconds with six decimals, e.g. `1732212345.000123`.
    static func formatSeconds(_ micros: Int64) -> String {
        var writer = JSONWriter(capacity: 24)
        writer.fixedPoint(micros, decimals: 6)
        return String(decoding: writer.bytes, as: UTF8.self)
    }
}
