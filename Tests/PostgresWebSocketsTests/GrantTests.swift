import Testing

@testable import PostgresWebSockets

/// Authorizes claims written as JSON text.
private func authorize(_ claims: String, channel: String? = nil) throws -> Grant {
    try Grant.authorize(claims: JSONParser.parse(claims), requestedChannel: channel)
}

/// The refusal reason, or nil when the claims are accepted.
private func refusal(_ claims: String, channel: String? = nil) throws -> String? {
    let parsed = try JSONParser.parse(claims)
    do {
        _ = try Grant.authorize(claims: parsed, requestedChannel: channel)
        return nil
    } catch {
        return error.reason
    }
}

private let badMode = #"JWT mode claim must be "r", "w" or "rw""#

@Suite("Grant.authorize")
struct GrantTests {
    // MARK: mode

    @Test("modes r, w and rw map to read, write and both")
    func modes() throws {
        #expect(try authorize(#"{"mode":"r","channel":"c"}"#).mode == .read)
        #expect(try authorize(#"{"mode":"w","channel":"c"}"#).mode == .write)
        #expect(try authorize(#"{"mode":"rw","channel":"c"}"#).mode == [.read, .write])
    }

    @Test(
        "any other mode is refused",
        arguments: [
            #""wr""#, #""R""#, #""RW""#, #""""#, #"" r""#, #""rwx""#, "1", "true", "null", #"["r"]"#, #"{"r":1}"#,
        ])
    func badModes(mode: String) throws {
        #expect(try refusal(#"{"mode":\#(mode),"channel":"c"}"#) == badMode)
        #expect(try refusal(#"{"mode":\#(mode)}"#, channel: "c") == badMode)
    }

    @Test("a token without mode is refused")
    func missingMode() throws {
        #expect(try refusal(#"{"channel":"c"}"#) == "JWT has no mode claim")
        #expect(try refusal(#"{}"#, channel: "c") == "JWT has no mode claim")
        #expect(try refusal(#"{"Mode":"rw"}"#, channel: "c") == "JWT has no mode claim")
    }

    @Test("claims that are not an object have no mode")
    func nonObjectClaims() throws {
        #expect(try refusal(#"["mode","rw"]"#, channel: "c") == "JWT has no mode claim")
        #expect(try refusal(#""rw""#, channel: "c") == "JWT has no mode claim")
    }

    // MARK: claimed channels

    @Test("channel and channels are merged, duplicates removed, first order kept")
    func mergedChannels() throws {
        let grant = try authorize(#"{"mode":"r","channel":"b","channels":["a","b","c","a","d","c"]}"#)
        #expect(grant.channels == ["b", "a", "c", "d"])
        #expect(try authorize(#"{"mode":"r","channels":["z","y","z"]}"#).channels == ["z", "y"])
        #expect(try authorize(#"{"mode":"r","channel":"only"}"#).channels == ["only"])
    }

    @Test("null channel claims count as absent")
    func nullClaims() throws {
        #expect(try authorize(#"{"mode":"r","channel":null,"channels":["a"]}"#).channels == ["a"])
        #expect(try authorize(#"{"mode":"r","channel":"a","channels":null}"#).channels == ["a"])
        #expect(try authorize(#"{"mode":"r","channel":null}"#, channel: "x").channels == ["x"])
    }

    @Test("/<jwt> without any claimed channel is refused")
    func noChannelAnywhere() throws {
        #expect(try refusal(#"{"mode":"rw"}"#) == "JWT claims no channel")
        #expect(try refusal(#"{"mode":"rw","channels":[]}"#) == "JWT claims no channel")
        #expect(try refusal(#"{"mode":"rw","channel":null}"#) == "JWT claims no channel")
    }

    @Test("a channel claim of the wrong type is refused", arguments: ["1", "true", #"["a"]"#, #"{"a":1}"#])
    func wrongChannelType(value: String) throws {
        #expect(try refusal(#"{"mode":"r","channel":\#(value)}"#) == "JWT channel claim must be a string")
        #expect(try refusal(#"{"mode":"r","channel":\#(value)}"#, channel: "a") == "JWT channel claim must be a string")
    }

    @Test(
        "a channels claim that is not an array of strings is refused",
        arguments: [#""a""#, "1", #"{"a":"b"}"#, #"["a",1]"#, #"["a",null]"#, #"[["a"]]"#])
    func wrongChannelsType(value: String) throws {
        #expect(try refusal(#"{"mode":"r","channels":\#(value)}"#) == "JWT channels claim must be an array of strings")
    }

    // MARK: requested channel

    @Test("/<channel>/<jwt> needs the channel among the claimed ones")
    func requestedMustBeClaimed() throws {
        let claims = #"{"mode":"rw","channel":"chat","channels":["news"]}"#
        #expect(try authorize(claims, channel: "chat").channels == ["chat"])
        #expect(try authorize(claims, channel: "news").channels == ["news"])
        #expect(try refusal(claims, channel: "other") == "channel not allowed by JWT")
        #expect(try refusal(claims, channel: "Chat") == "channel not allowed by JWT")
        #expect(try refusal(claims, channel: "chat ") == "channel not allowed by JWT")
    }

    @Test("/<channel>/<jwt> with no claimed channel grants the requested one")
    func requestedWithoutClaims() throws {
        let grant = try authorize(#"{"mode":"r"}"#, channel: "anything")
        #expect(grant == Grant(mode: .read, channels: ["anything"], claimedChannels: []))
        #expect(grant.allows("anything else"), "no channel claims: any channel")
    }

    @Test("channel names are compared by their bytes, not by Unicode equivalence")
    func byteComparison() throws {
        // PostgreSQL compares identifiers bytewise: "caf\u{E9}" and "cafe\u{301}" are two channels.
        let precomposed = "caf\u{E9}"
        let decomposed = "cafe\u{301}"
        #expect(
            try refusal(#"{"mode":"r","channel":"\#(precomposed)"}"#, channel: decomposed)
                == "channel not allowed by JWT")
        #expect(try refusal(#"{"mode":"r","channel":"K"}"#, channel: "\u{212A}") == "channel not allowed by JWT")
        let grant = try authorize(#"{"mode":"r","channels":["\#(precomposed)","\#(decomposed)"]}"#)
        #expect(grant.channels.map { Array($0.utf8) } == [Array(precomposed.utf8), Array(decomposed.utf8)])
    }

    // MARK: channel name rules

    @Test("a 63-byte channel name is accepted, 64 bytes are refused")
    func asciiLength() throws {
        let ok = String(repeating: "a", count: 63)
        let long = String(repeating: "a", count: 64)
        #expect(try authorize(#"{"mode":"r"}"#, channel: ok).channels == [ok])
        #expect(try authorize(#"{"mode":"r","channel":"\#(ok)"}"#).channels == [ok])
        #expect(try refusal(#"{"mode":"r"}"#, channel: long) == "bad channel name: channel name longer than 63 bytes")
        #expect(
            try refusal(#"{"mode":"r","channel":"\#(long)"}"#)
                == "bad channel name in JWT: channel name longer than 63 bytes")
        #expect(
            try refusal(#"{"mode":"r","channels":["a","\#(long)"]}"#, channel: "a")
                == "bad channel name in JWT: channel name longer than 63 bytes")
    }

    @Test("the length limit counts UTF-8 bytes, not characters")
    func multibyteLength() throws {
        let ok = String(repeating: "\u{E9}", count: 31) + "a"  // 63 bytes, 32 characters
        let long = String(repeating: "\u{E9}", count: 32)  // 64 bytes, 32 characters
        let emoji = String(repeating: "\u{1F600}", count: 16)  // 64 bytes, 16 characters
        #expect(try authorize(#"{"mode":"r"}"#, channel: ok).channels == [ok])
        #expect(try refusal(#"{"mode":"r"}"#, channel: long) == "bad channel name: channel name longer than 63 bytes")
        #expect(try refusal(#"{"mode":"r"}"#, channel: emoji) == "bad channel name: channel name longer than 63 bytes")
        #expect(
            try refusal(#"{"mode":"r","channel":"\#(long)"}"#)
                == "bad channel name in JWT: channel name longer than 63 bytes")
    }

    @Test("empty channel names are refused")
    func emptyName() throws {
        #expect(try refusal(#"{"mode":"r"}"#, channel: "") == "bad channel name: empty channel name")
        #expect(try refusal(#"{"mode":"r","channel":""}"#) == "bad channel name in JWT: empty channel name")
        #expect(try refusal(#"{"mode":"r","channels":["a",""]}"#) == "bad channel name in JWT: empty channel name")
    }

    @Test("channel names containing NUL are refused")
    func nulName() throws {
        #expect(
            try refusal(#"{"mode":"r"}"#, channel: "a\u{0}b") == "bad channel name: channel name contains a NUL byte")
        #expect(
            try refusal(#"{"mode":"r","channel":"a\u0000b"}"#)
                == "bad channel name in JWT: channel name contains a NUL byte")
        #expect(
            try refusal(#"{"mode":"r","channel":"a\u0000b"}"#, channel: "a")
                == "bad channel name in JWT: channel name contains a NUL byte")
    }

    @Test("ChannelName.problem states each rule")
    func channelNameRules() {
        #expect(ChannelName.maxBytes == 63)
        #expect(ChannelName.problem(with: "chat") == nil)
        #expect(ChannelName.problem(with: "with space/and.dots") == nil)
        #expect(ChannelName.problem(with: "") == "empty channel name")
        #expect(ChannelName.problem(with: "\u{0}") == "channel name contains a NUL byte")
        #expect(ChannelName.problem(with: String(repeating: "x", count: 64)) == "channel name longer than 63 bytes")
    }
}
