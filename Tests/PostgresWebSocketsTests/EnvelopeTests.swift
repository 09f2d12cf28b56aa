import Foundation
import Testing

@testable import PostgresWebSockets

private func text(_ bytes: [UInt8]) -> String {
    String(decoding: bytes, as: UTF8.self)
}

private func prefix(_ claims: String) throws -> [UInt8] {
    Envelope.claimsPrefix(try JSONParser.parse(claims))
}

@Suite("Envelope")
struct EnvelopeTests {
    @Test("a known message gives the exact envelope text of postgres-websockets")
    func exactText() throws {
        let envelope = Envelope.encode(
            event: .websocketMessage, channel: "chat", payload: "hi",
            claimsPrefix: try prefix(#"{"mode":"rw","channel":"chat"}"#),
            deliveredAtMicroseconds: 1_732_212_345_123_456)
        #expect(
            text(envelope)
                == #"{"event":"WebsocketMessage","channel":"chat","payload":"hi","claims":{"mode":"rw","channel":"chat","message_delivered_at":1732212345.123456}}"#
        )
    }

    @Test("event names are those of postgres-websockets")
    func eventNames() throws {
        #expect(Envelope.Event.websocketMessage.rawValue == "WebsocketMessage")
        #expect(Envelope.Event.connectionOpen.rawValue == "ConnectionOpen")
        #expect(Envelope.Event.connectionClose.rawValue == "ConnectionClose")
        let open = Envelope.encode(
            event: .connectionOpen, channel: "server-info", payload: "", claimsPrefix: Array("{".utf8),
            deliveredAtMicroseconds: 5)
        #expect(
            text(open)
                == #"{"event":"ConnectionOpen","channel":"server-info","payload":"","claims":{"message_delivered_at":0.000005}}"#
        )
    }

    @Test("claimsPrefix leaves the object open for message_delivered_at")
    func claimsPrefix() throws {
        #expect(text(try prefix(#"{"mode":"rw","channel":"chat"}"#)) == #"{"mode":"rw","channel":"chat","#)
        #expect(text(try prefix("{}")) == "{")
        #expect(text(Envelope.claimsPrefix(.array([.string("x")]))) == "{")
        #expect(text(Envelope.claimsPrefix(.null)) == "{")
    }

    @Test("claimsPrefix drops an existing message_delivered_at wherever it is")
    func claimsPrefixDropsTimestamp() throws {
        #expect(
            text(try prefix(#"{"message_delivered_at":1,"mode":"r","x":{"message_delivered_at":2}}"#))
                == #"{"mode":"r","x":{"message_delivered_at":2},"#)
        #expect(text(try prefix(#"{"message_delivered_at":"forged"}"#)) == "{")
        let envelope = Envelope.encode(
            event: .websocketMessage, channel: "c", payload: "p",
            claimsPrefix: try prefix(#"{"mode":"w","message_delivered_at":1}"#), deliveredAtMicroseconds: 2_000_000)
        let parsed = try JSONParser.parse(text(envelope))
        #expect(parsed["claims"] == .object([("mode", .string("w")), ("message_delivered_at", .number("2.000000"))]))
    }

    @Test("claims keep their order and number text in the envelope")
    func claimsText() throws {
        let claims = #"{"z":12345678901234567890,"a":[1e400,"\u00e9"],"mode":"rw"}"#
        let envelope = Envelope.encode(
            event: .websocketMessage, channel: "c", payload: "p", claimsPrefix: try prefix(claims),
            deliveredAtMicroseconds: 1)
        #expect(
            text(envelope)
                == #"{"event":"WebsocketMessage","channel":"c","payload":"p","claims":{"z":12345678901234567890,"a":[1e400,""#
                + "\u{E9}"
                + #""],"mode":"rw","message_delivered_at":0.000001}}"#)
    }

    @Test(
        "payloads with quotes, newlines, control characters and unicode parse back to the original",
        arguments: [
            #"say "hi" \ bye"#,
            "line1\nline2\r\n\ttab",
            "\u{0}\u{1}\u{1F}\u{7F}",
            "caf\u{E9} \u{2615} \u{1F600} \u{202E}rtl",
            #"{"json":"inside","n":1}"#,
            "</script><b>&amp;",
            "",
        ])
    func payloadEscaping(payload: String) throws {
        let envelope = Envelope.encode(
            event: .websocketMessage, channel: "ch\"an\nnel", payload: payload,
            claimsPrefix: try prefix(#"{"mode":"w"}"#), deliveredAtMicroseconds: 1_732_212_345_000_001)
        #expect(!envelope.contains(where: { $0 < 0x20 }), "raw control byte in the envelope")
        let parsed = try JSONParser.parse(envelope)
        #expect(parsed["payload"] == .string(payload))
        #expect(Array(parsed["payload"]!.stringValue!.utf8) == Array(payload.utf8))
        #expect(parsed["channel"] == .string("ch\"an\nnel"))
        #expect(parsed["event"] == .string("WebsocketMessage"))
        #expect(parsed["claims"]?["message_delivered_at"] == .number("1732212345.000001"))
    }

    @Test("the raw-bytes encoder gives the same text as the String one")
    func rawPayload() throws {
        let claims = try prefix(#"{"mode":"rw"}"#)
        let payload = "a\"b\u{E9}"
        let fromString = Envelope.encode(
            event: .websocketMessage, channel: "c", payload: payload, claimsPrefix: claims, deliveredAtMicroseconds: 7)
        let fromBytes = Array(payload.utf8).withUnsafeBytes {
            Envelope.encode(
                event: .websocketMessage, channel: "c", payload: $0, claimsPrefix: claims, deliveredAtMicroseconds: 7)
        }
        #expect(fromBytes == fromString)
    }

    @Test("formatSeconds always writes six decimals")
    func formatSeconds() {
        #expect(Envelope.formatSeconds(1_732_212_345_000_123) == "1732212345.000123")
        #expect(Envelope.formatSeconds(1_732_212_345_123_456) == "1732212345.123456")
        #expect(Envelope.formatSeconds(1_732_212_345_100_000) == "1732212345.100000")
        #expect(Envelope.formatSeconds(1_732_212_345_000_000) == "1732212345.000000")
        #expect(Envelope.formatSeconds(0) == "0.000000")
        #expect(Envelope.formatSeconds(1) == "0.000001")
        #expect(Envelope.formatSeconds(999_999) == "0.999999")
        #expect(Envelope.formatSeconds(1_000_000) == "1.000000")
    }

    @Test("fixedPoint writes any Int64 with any number of decimals, as the decimal it stands for")
    func fixedPoint() {
        func written(_ value: Int64, _ decimals: Int) -> String {
            var writer = JSONWriter()
            writer.fixedPoint(value, decimals: decimals)
            return String(decoding: writer.bytes, as: UTF8.self)
        }
        #expect(written(0, 0) == "0")
        #expect(written(42, 0) == "42")
        #expect(written(-5, 3) == "-0.005")
        #expect(written(-1_234_567, 6) == "-1.234567")
        #expect(written(.max, 6) == "9223372036854.775807")
        #expect(written(.min, 6) == "-9223372036854.775808")
        #expect(written(.min, 0) == "-9223372036854775808")
        for value in [Int64(7), 123_456_789, -98_765, 1_732_212_345_000_123] {
            for decimals in 0...8 {
                let reference = Decimal(value) / pow(Decimal(10), decimals)
                #expect(Decimal(string: written(value, decimals)) == reference, "\(value) with \(decimals)")
            }
        }
    }

    @Test("the payload limit is PostgreSQL's")
    func payloadLimit() {
        #expect(Envelope.maxPayloadBytes == 7999)
    }
}

@Suite("UniqueTimestamps")
struct UniqueTimestampsTests {
    @Test("next() strictly increases over 100,000 calls")
    func strictlyIncreasing() {
        let clock = UniqueTimestamps.shared
        var previous = clock.next()
        var repeats = 0
        for _ in 0..<100_000 {
            let next = clock.next()
            if next <= previous { repeats += 1 }
            previous = next
        }
        #expect(repeats == 0)
    }

    @Test("next() follows the wall clock")
    func followsWallClock() {
        let clock = UniqueTimestamps()
        let before = WallClock.microseconds()
        let value = clock.next()
        let after = WallClock.microseconds()
        #expect(value >= before)
        #expect(value <= after + 1)
        // 2020-01-01 < now < 2100-01-01, in seconds.
        #expect(WallClock.seconds() > 1_577_836_800)
        #expect(WallClock.seconds() < 4_102_444_800)
    }

    @Test("concurrent callers never receive the same value")
    func concurrentUnique() async {
        let clock = UniqueTimestamps()
        let values = await withTaskGroup(of: [Int64].self) { group in
            for _ in 0..<4 {
                group.addTask { (0..<10_000).map { _ in clock.next() } }
            }
            var all: [Int64] = []
            for await chunk in group { all += chunk }
            return all
        }
        #expect(values.count == 40_000)
        #expect(Set(values).count == values.count)
    }
}
