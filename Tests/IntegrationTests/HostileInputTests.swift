import BridgeTestSupport
import Foundation
import PostgresWebSockets
import Testing

/// Thousands of broken tokens and malformed upgrades: each gets a defined 4xx answer, none
/// crashes, hangs or gets a 5xx, and the server keeps serving good clients afterwards.
@Suite struct HostileInputTests {
    /// A small deterministic generator, so a failing mutation can be replayed from its seed.
    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let base64URL = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

    /// One broken token: every kind the issue names, chosen by `index`.
    static func mutatedToken(_ index: Int, rng: inout SplitMix64) -> String {
        let channel = "fuzz"
        let valid = TestTokens.mint(mode: "rw", channel: channel, exp: 4_102_444_800)
        let parts = valid.split(separator: ".").map(String.init)
        func junk(_ count: Int) -> String {
            String((0..<count).map { _ in base64URL.randomElement(using: &rng)! })
        }
        switch index % 14 {
        case 0:  // one flipped bit anywhere
            var bytes = Array(valid.utf8)
            let position = Int.random(in: 0..<bytes.count, using: &rng)
            bytes[position] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
            return String(decoding: bytes, as: UTF8.self)
        case 1:  // truncated anywhere (a whole prefix of a valid token)
            return String(valid.prefix(Int.random(in: 0..<valid.count, using: &rng)))
        case 2:  // base64 junk in one segment
            var mutated = parts
            mutated[Int.random(in: 0..<3, using: &rng)] = junk(Int.random(in: 0..<200, using: &rng))
            return mutated.joined(separator: ".")
        case 3:  // a huge segment (kept under the header limit)
            var mutated = parts
            mutated[Int.random(in: 0..<3, using: &rng)] = junk(Int.random(in: 2000..<12000, using: &rng))
            return mutated.joined(separator: ".")
        case 4:  // wrong alg, correctly signed with HMAC
            let alg = ["RS256", "ES256", "PS512", "HS1", "hs256", "EdDSA", "HS256 ", "none"].randomElement(using: &rng)!
            return TestTokens.mint(claimsJSON: #"{"mode":"rw","channel":"fuzz"}"#, headerJSON: #"{"alg":"\#(alg)"}"#)
        case 5:  // alg none, unsigned or with a leftover signature
            let header = TestTokens.segment(#"{"alg":"none","typ":"JWT"}"#)
            return header + "." + parts[1] + "." + (Bool.random(using: &rng) ? "" : parts[2])
        case 6:  // a kid header pasted onto a valid token: the signature no longer matches
            return TestTokens.segment(#"{"alg":"HS256","typ":"JWT","kid":"\#(junk(8))"}"#) + "." + parts[1] + "."
                + parts[2]
        case 7:  // claims that are not JSON, correctly signed
            let text = ["mode=rw", "{", "{\"mode\":\"rw\"", "[]", "null", "\"rw\"", "{\"mode\":\"rw\",}", junk(30)]
                .randomElement(using: &rng)!
            return TestTokens.mint(claimsJSON: text)
        case 8:  // claims of the wrong types, correctly signed
            let claims = [
                #"{"mode":1,"channel":"fuzz"}"#, #"{"mode":["rw"],"channel":"fuzz"}"#, #"{"mode":"rw","channel":5}"#,
                #"{"mode":"rw","channels":"fuzz"}"#, #"{"mode":"rw","channels":[1,2]}"#,
                #"{"mode":null,"channel":"fuzz"}"#,
                #"{"mode":"rw","channel":{"a":1}}"#, #"{"mode":"rwx","channel":"fuzz"}"#,
            ].randomElement(using: &rng)!
            return TestTokens.mint(claimsJSON: claims)
        case 9:  // exp and nbf as strings or out of range
            let claims = [
                #"{"mode":"rw","channel":"fuzz","exp":"4102444800"}"#, #"{"mode":"rw","channel":"fuzz","nbf":"0"}"#,
                #"{"mode":"rw","channel":"fuzz","exp":1}"#, #"{"mode":"rw","channel":"fuzz","exp":1e400}"#,
                #"{"mode":"rw","channel":"fuzz","exp":null}"#, #"{"mode":"rw","channel":"fuzz","nbf":9e99}"#,
            ].randomElement(using: &rng)!
            return TestTokens.mint(claimsJSON: claims)
        case 10:  // deeply nested or duplicated claims
            let depth = Int.random(in: 40..<2000, using: &rng)
            let nested =
                #"{"mode":"rw","channel":"fuzz","x":"# + String(repeating: "[", count: depth)
                + String(repeating: "]", count: depth) + "}"
            let duplicate = #"{"mode":"r","mode":"rw","channel":"fuzz"}"#
            return TestTokens.mint(claimsJSON: Bool.random(using: &rng) ? nested : duplicate)
        case 11:  // wrong number of segments
            let count = [1, 2, 4, 5].randomElement(using: &rng)!
            return (0..<count).map { _ in junk(Int.random(in: 0..<40, using: &rng)) }.joined(separator: ".")
        case 12:  // signed with another secret, or with the secret of another algorithm
            return TestTokens.mint(mode: "rw", channel: channel, secret: junk(Int.random(in: 1..<80, using: &rng)))
        default:  // random printable bytes, including characters that need percent-encoding
            let alphabet = Array("abcXYZ019.-_~!$&'()*+,;=:@%/?#[] \"<>\\^`{|}é😀\u{0}\u{7F}")
            return String((0..<Int.random(in: 0..<300, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
        }
    }

    @Test func tenThousandMutatedTokensAreRefusedCleanly() async throws {
        try await TestServer.with { server in
            // Under ThreadSanitizer (10x slower) a fifth is enough to exercise every code path.
            let total = runsUnderSanitizer ? 2_000 : 10_000
            let concurrency = 16
            let outcomes = try await withThrowingTaskGroup(of: [Int: Int].self) { group in
                for worker in 0..<concurrency {
                    group.addTask {
                        var rng = SplitMix64(state: UInt64(worker) &* 7919 &+ 1)
                        var counts: [Int: Int] = [:]
                        for index in stride(from: worker, to: total, by: concurrency) {
                            let token = Self.mutatedToken(index, rng: &rng)
                            let encoded = TestServer.pathSegment(token)
                            let path = index % 2 == 0 ? "/\(encoded)" : "/fuzz/\(encoded)"
                            switch try await server.open(path) {
                            case .refused(let refusal):
                                counts[refusal.status, default: 0] += 1
                                if refusal.status != 401 && refusal.status != 403 {
                                    Issue.record(
                                        "mutation \(index) (\(token.prefix(80))) got \(refusal.status): \(refusal.body)"
                                    )
                                }
                            case .upgraded(let client):
                                counts[101, default: 0] += 1
                                Issue.record("mutation \(index) was accepted: \(token.prefix(120))")
                                await client.disconnect()
                            }
                        }
                        return counts
                    }
                }
                var all: [Int: Int] = [:]
                for try await counts in group { all.merge(counts, uniquingKeysWith: +) }
                return all
            }
            #expect(outcomes.values.reduce(0, +) == total)
            #expect(outcomes[401, default: 0] > 0 && outcomes[403, default: 0] > 0, "\(outcomes)")
            // Still alive and serving.
            let channel = uniqueChannel()
            let client = try await server.connect(channel: channel, mode: "rw")
            try await client.send(text: "alive")
            #expect(try JSONParser.parse(try await client.nextText())["payload"] == .string("alive"))
        }
    }

    /// Requests no browser sends. Each gets a 4xx status line and the connection is closed;
    /// none goes unanswered or gets a 5xx.
    @Test func malformedUpgradesGetA4xxAndAClosedConnection() async throws {
        try await TestServer.with { server in
            let token = TestTokens.mint(mode: "rw")
            let ws = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            var cases: [(String, [UInt8], Set<Int>)] = []
            func add(_ name: String, _ request: [UInt8], _ expected: Set<Int>) {
                cases.append((name, request, expected))
            }
            let noise: [UInt8] = (0..<512).map { (i: Int) -> UInt8 in UInt8(truncatingIfNeeded: i &* 37 &+ 11) }
            add("missing key", Array("GET /c/\(token) HTTP/1.1\r\nHost: h\r\n\(ws)\r\n".utf8), [400])
            add("two keys", Array("GET /c/\(token) HTTP/1.1\r\nHost: h\r\n\(ws)\(key)\(key)\r\n".utf8), [400])
            add(
                "wrong version",
                Array(
                    "GET /c/\(token) HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 7\r\n\(key)\r\n"
                        .utf8), [426])
            add(
                "no Connection: Upgrade",
                Array(
                    "GET /c/\(token) HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\(key)\r\n"
                        .utf8), [400])
            add(
                "absurd path",
                Array(
                    "GET /\(String(repeating: "a/", count: 500))\(token) HTTP/1.1\r\nHost: h\r\n\(ws)\(key)\r\n".utf8),
                [404])
            add("empty path", Array("GET / HTTP/1.1\r\nHost: h\r\n\(ws)\(key)\r\n".utf8), [401])
            add("double slash", Array("GET //\(token) HTTP/1.1\r\nHost: h\r\n\(ws)\(key)\r\n".utf8), [403])
            add("asterisk", Array("GET * HTTP/1.1\r\nHost: h\r\n\(ws)\(key)\r\n".utf8), [400, 401, 404])
            add(
                "absolute URI", Array("GET http://h/c/\(token) HTTP/1.1\r\nHost: h\r\n\(ws)\(key)\r\n".utf8),
                [400, 401, 404])
            add(
                "bad percent in channel", Array("GET /c%zz/\(token) HTTP/1.1\r\nHost: h\r\n\(ws)\(key)\r\n".utf8), [403]
            )
            add("truncated percent", Array("GET /c%/\(token) HTTP/1.1\r\nHost: h\r\n\(ws)\(key)\r\n".utf8), [403])
            add("bad percent in token", Array("GET /c/%G0\(token) HTTP/1.1\r\nHost: h\r\n\(ws)\(key)\r\n".utf8), [401])
            add("non-UTF-8 channel", Array("GET /%FF%FE/\(token) HTTP/1.1\r\nHost: h\r\n\(ws)\(key)\r\n".utf8), [403])
            add(
                "64-byte channel",
                Array("GET /\(String(repeating: "c", count: 64))/\(token) HTTP/1.1\r\nHost: h\r\n\(ws)\(key)\r\n".utf8),
                [403])
            add(
                "encoded NUL in channel", Array("GET /a%00b/\(token) HTTP/1.1\r\nHost: h\r\n\(ws)\(key)\r\n".utf8),
                [403])
            add(
                "raw NUL in path",
                Array("GET /a".utf8) + [0] + Array("b/\(token) HTTP/1.1\r\nHost: h\r\n\(ws)\(key)\r\n".utf8), [400])
            add("NUL in a header", Array("GET /c/\(token) HTTP/1.1\r\nHost: h\u{0}x\r\n\(ws)\(key)\r\n".utf8), [400])
            add("header without colon", Array("GET /c/\(token) HTTP/1.1\r\nHost h\r\n\(ws)\(key)\r\n".utf8), [400])
            add("HTTP/2 preface", Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8), [400, 405])
            add("unknown method", Array("BREW /c/\(token) HTTP/1.1\r\nHost: h\r\n\(ws)\(key)\r\n".utf8), [400, 405])
            add("binary noise", noise, [400])
            add(
                "body on upgrade",
                Array(
                    "GET /c/\(token) HTTP/1.1\r\nHost: h\r\n\(ws)Sec-WebSocket-Key: bad\r\nContent-Length: 5\r\n\r\nhello"
                        .utf8), [400])
            add(
                "chunked upgrade",
                Array(
                    "GET /c/\(token) HTTP/1.1\r\nHost: h\r\n\(ws)Transfer-Encoding: chunked\r\nSec-WebSocket-Key: x\r\n\r\n0\r\n\r\n"
                        .utf8), [400])
            for (name, request, expected) in cases {
                let connection = try await RawConnection.open(port: server.port)
                // The server may answer and close before the whole request is written: the
                // answer is what counts, not whether the rest of the write got through.
                try? await connection.send(bytes: request)
                let answer = try await connection.readToEnd(timeout: 10)
                let status = Int(answer.split(separator: " ").dropFirst().first ?? "") ?? 0
                #expect(expected.contains(status), "\(name): \(answer.prefix(120))")
            }
            let client = try await server.connect(channel: uniqueChannel(), mode: "r")
            try await client.ping([9])
            #expect(try await client.next() == .pong([9]))
        }
    }
}
