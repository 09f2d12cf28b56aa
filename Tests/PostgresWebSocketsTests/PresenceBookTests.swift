import Testing

@testable import PostgresWebSockets

@Suite struct PresenceBookTests {
    static func prefix(_ json: String) throws -> [UInt8] {
        Envelope.claimsPrefix(try JSONParser.parse(json))
    }

    @Test func aMemberIsItsClaimAndTheSharedFieldsOnly() throws {
        let claims = try JSONParser.parse(#"{"sub":"alice","name":"Alice","role":"admin","n":2}"#)
        let member = try #require(PresenceMember(claims: claims, claim: "sub", fields: ["name", "missing"]))
        #expect(member.id == #""alice""#)
        #expect(try JSONParser.parse(member.shown) == JSONParser.parse(#"{"id":"alice","claims":{"name":"Alice"}}"#))
        #expect(PresenceMember(claims: claims, claim: "n", fields: [])?.id == "2", "any JSON value is an id")
        #expect(PresenceMember(claims: claims, claim: "absent", fields: []) == nil)
        #expect(PresenceMember(claims: try JSONParser.parse(#"{"sub":null}"#), claim: "sub", fields: []) == nil)
        let long = String(repeating: "x", count: PresenceMember.maxIDBytes)
        #expect(PresenceMember(claims: .object([("sub", .string(long))]), claim: "sub", fields: []) == nil)
    }

    @Test func aSharedClaimTooLargeForOneNotifyIsLeftOut() throws {
        let big = String(repeating: "b", count: PresenceMember.maxMemberBytes)
        let claims = JSONValue.object([("sub", .string("a")), ("bio", .string(big))])
        let member = try #require(PresenceMember(claims: claims, claim: "sub", fields: ["bio"]))
        #expect(member.shown == #"{"id":"a","claims":{}}"#)
    }

    @Test func onlyTheLatestStateOfARowIsTaken() throws {
        let book = PresenceBook(settings: PresenceSettings())
        #expect(book.dirtySince == nil)
        book.joined(socket: 1, channel: "a", claimsPrefix: try Self.prefix(#"{"sub":"x"}"#))
        book.joined(socket: 2, channel: "a", claimsPrefix: try Self.prefix(#"{"sub":"y"}"#))
        book.left(socket: 2, channel: "a")
        #expect(book.dirtySince != nil)
        let changes = book.takeChanges().sorted { $0.key.socket < $1.key.socket }
        #expect(changes.map(\.key.socket) == [1, 2])
        #expect(changes[0].row?.member?.id == #""x""#)
        #expect(changes[1].row == nil, "joined and left within one batch: a removal PostgreSQL may skip")
        #expect(book.takeChanges().isEmpty && book.dirtySince == nil)
        #expect(book.members(of: "a").map(\.id) == [#""x""#])
    }

    @Test func membersAreDistinctAndRowsComeBackAfterASweep() throws {
        let book = PresenceBook(settings: PresenceSettings())
        let bob = try Self.prefix(#"{"sub":"bob"}"#)
        book.joined(socket: 1, channel: "a", claimsPrefix: bob)
        book.joined(socket: 2, channel: "a", claimsPrefix: bob)
        book.joined(socket: 3, channel: "a", claimsPrefix: try Self.prefix(#"{"mode":"r"}"#))
        #expect(book.members(of: "a").map(\.id) == [#""bob""#])
        _ = book.takeChanges()
        book.markAllDirty()
        #expect(Set(book.takeChanges().map(\.key.socket)) == [1, 2, 3])
    }
}
