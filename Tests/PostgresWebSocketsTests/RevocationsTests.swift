import Testing

@testable import PostgresWebSockets

private func json(_ text: String) -> JSONValue {
    try! JSONParser.parse(text)
}

@Suite("jsonb containment")
struct JSONContainmentTests {
    @Test(
        "objects, arrays and scalars contain as PostgreSQL's @> does",
        arguments: [
            (#"{"sub":"a","mode":"r"}"#, #"{"sub":"a"}"#, true),
            (#"{"sub":"a"}"#, #"{"sub":"b"}"#, false),
            (#"{"sub":"a"}"#, #"{}"#, true),
            (#"{"sub":"a"}"#, #"{"sub":"a","team":"t"}"#, false),
            (#"{"roles":["admin","dev"]}"#, #"{"roles":["dev"]}"#, true),
            (#"{"roles":["admin","dev"]}"#, #"{"roles":["ops"]}"#, false),
            (#"{"roles":["admin"]}"#, #"{"roles":"admin"}"#, false),
            (#"{"org":{"id":7,"name":"x"}}"#, #"{"org":{"id":7}}"#, true),
            (#"{"org":{"id":7}}"#, #"{"org":{"id":7.0}}"#, true),
            (#"{"org":{"id":7}}"#, #"{"org":{"id":"7"}}"#, false),
            (#"{"a":[[1,2],[3]]}"#, #"{"a":[[2]]}"#, true),
            (#"["a","b"]"#, #""a""#, true),
            (#"{"flag":true}"#, #"{"flag":true}"#, true),
            (#"{"flag":null}"#, #"{"flag":false}"#, false),
        ])
    func containment(container: String, filter: String, expected: Bool) {
        #expect(json(container).contains(json(filter)) == expected)
    }
}

@Suite("Revocations")
struct RevocationsTests {
    final class Recorder: SocketRevoker, @unchecked Sendable {
        var calls: [(JSONValue, CloseReason)] = []
        func disconnect(matching filter: JSONValue, reason: CloseReason) { calls.append((filter, reason)) }
    }

    @Test("sub and jti filters, and any other filter, refuse matching claims until their time")
    func refuses() {
        let revocations = Revocations()
        revocations.replaceAll(
            with: [
                .init(filter: json(#"{"sub":"alice"}"#), until: 100),
                .init(filter: json(#"{"jti":"t-1"}"#), until: 50),
                .init(filter: json(#"{"team":"red","role":"guest"}"#), until: 100),
                .init(filter: json(#"{"sub":"gone"}"#), until: 5),
            ], now: 10)
        #expect(revocations.count == 3, "the one that ended is not kept")
        #expect(revocations.isRevoked(json(#"{"sub":"alice","mode":"r"}"#), now: 20))
        #expect(!revocations.isRevoked(json(#"{"sub":"alice"}"#), now: 100), "ends at until")
        #expect(revocations.isRevoked(json(#"{"jti":"t-1"}"#), now: 49))
        #expect(!revocations.isRevoked(json(#"{"jti":"t-2"}"#), now: 20))
        #expect(revocations.isRevoked(json(#"{"team":"red","role":"guest","sub":"x"}"#), now: 20))
        #expect(!revocations.isRevoked(json(#"{"team":"red","role":"admin"}"#), now: 20))
        #expect(!revocations.isRevoked(json(#"{"sub":1}"#), now: 20))
    }

    @Test("a later revocation of the same sub extends it; revoke prunes ended ones and closes open sockets")
    func revokeAndDisconnect() {
        let recorder = Recorder()
        let revocations = Revocations(revoker: recorder)
        revocations.revoke(.init(filter: json(#"{"sub":"a"}"#), until: 30), reason: .revoked("token revoked"), now: 10)
        revocations.revoke(.init(filter: json(#"{"sub":"a"}"#), until: 20), reason: .revoked("token revoked"), now: 10)
        #expect(revocations.isRevoked(json(#"{"sub":"a"}"#), now: 25))
        revocations.revoke(.init(filter: json(#"{"x":1}"#), until: 40), reason: .revoked("token revoked"), now: 35)
        #expect(revocations.count == 1, "the sub's revocation ended at 30")
        revocations.disconnect(matching: json(#"{"sub":"b"}"#), reason: .revoked("bye"))
        #expect(recorder.calls.count == 4)
        #expect(recorder.calls.last?.0 == json(#"{"sub":"b"}"#) && recorder.calls.last?.1.code == 3003)
        #expect(!revocations.isRevoked(json(#"{"sub":"b"}"#), now: 36), "a disconnect refuses nothing")
    }

    @Test("signals parse as pgws.disconnect and pgws.revoke send them; anything else is refused")
    func signals() {
        #expect(
            RevocationSignal(payload: Array(#"{"filter": {"sub": "a"}, "reason": "bye"}"#.utf8))
                == RevocationSignal(filter: json(#"{"sub":"a"}"#), reason: "bye", until: nil))
        #expect(
            RevocationSignal(payload: Array(#"{"until": 1796046307.5, "filter": {}, "reason": "token revoked"}"#.utf8))
                == RevocationSignal(filter: json("{}"), reason: "token revoked", until: 1_796_046_307.5))
        for bad in [
            #"{"filter": [1], "reason": "x"}"#, #"{"filter": {}}"#, #"{"filter": {}, "reason": "x", "until": "soon"}"#,
            "nope",
        ] {
            #expect(RevocationSignal(payload: Array(bad.utf8)) == nil, "\(bad)")
        }
    }

    @Test("a close reason longer than a close frame holds is cut at a character boundary")
    func longReason() {
        let reason = CloseReason.revoked(String(repeating: "é", count: 100))
        #expect(reason.code == 3003)
        #expect(reason.text.utf8.count == 122)
        #expect(CloseReason.revoked("short").text == "short")
    }
}
