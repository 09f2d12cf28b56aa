import Testing

@testable import PostgresWebSockets

/// The secret of sample.conf and of the postgres-websockets README (test only).
private let sampleSecret = Array("auwhfdnskjhewfi34uwehdlaehsfkuaeiskjnfduierhfsiweskjcnzeiluwhskdewishdnpwe".utf8)
private let sampleVerifier = JWTVerifier(secret: sampleSecret)
/// 2023-11-14T22:13:20Z: after the expired vector, before every `exp`/`nbf` of 2100.
private let now: Double = 1_700_000_000

// From the postgres-websockets README, HS256 under `sampleSecret`.
private let readmeRW =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoicncifQ.QKGnMJe41OFZcjz_qQSplmWAmVd_hmVjijKUNoJYpis"
private let readmeRWChat =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoicnciLCJjaGFubmVsIjoiY2hhdCJ9.fEm6P7GHeJWZG8OtZhv3H0JdqPljE5dainvsoupM9pA"

// Minted with PyJWT 2.15.1 (Python 3.11.7), S = the sample secret above:
//   c = {"mode": "r", "channels": ["a", "b"], "exp": 4102444800}
//   jwt.encode(c, S, algorithm="HS256") / "HS384" / "HS512"
private let pyHS256 =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoiciIsImNoYW5uZWxzIjpbImEiLCJiIl0sImV4cCI6NDEwMjQ0NDgwMH0.IdnzI8188fpXwZF6-ibiV01Onmkbf-SO-9COsYc_c0k"
private let pyHS384 =
    "eyJhbGciOiJIUzM4NCIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoiciIsImNoYW5uZWxzIjpbImEiLCJiIl0sImV4cCI6NDEwMjQ0NDgwMH0.QPptEoQu4bdooTAQXOKPtO8rXlhcxx7rVuxJ7ejdO8QENH6Jmu92-xxemI6CL3r3"
private let pyHS512 =
    "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoiciIsImNoYW5uZWxzIjpbImEiLCJiIl0sImV4cCI6NDEwMjQ0NDgwMH0.Gq0i05gBOELshIxLp-Be9Xp8U20ZpimdMgnVn70mDyzQDkkZG6OfxOq4lTWGMZRQqqUiaQtmdlkKy5yg0143EA"
//   jwt.encode({"mode": "rw", "channel": "chat", "exp": 1000000000}, S, algorithm="HS256")
private let pyExpired =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoicnciLCJjaGFubmVsIjoiY2hhdCIsImV4cCI6MTAwMDAwMDAwMH0.Fr6mRaMrzCV2RQJf3knyL1p8fa_fB_LJVFNoVtP7bTE"
//   jwt.encode({"mode": "rw", "channel": "chat", "nbf": 4102444800}, S, algorithm="HS256")
private let pyNotBefore =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoicnciLCJjaGFubmVsIjoiY2hhdCIsIm5iZiI6NDEwMjQ0NDgwMH0.-fZ6iz0Bdc53dVYAKTngT8bpgls4waPqhmVj0cb7_lQ"
//   jwt.encode({"mode": "rw", "channel": "caf\u00e9-\u2615-\U0001F600"}, S, algorithm="HS256")
//   (PyJWT writes the claims with json.dumps, so the channel arrives as \u escapes
//   including a surrogate pair.)
private let pyUnicode =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoicnciLCJjaGFubmVsIjoiY2FmXHUwMGU5LVx1MjYxNS1cdWQ4M2RcdWRlMDAifQ.Qj4mz03BbaAKTJoMRabxo_Cr6i4YLrc9Ja-juv69uqk"
//   jwt.encode({"mode": "w", "channel": "chat", "user_id": 12345678901234567890, "ratio": 1.50}, S, algorithm="HS256")
private let pyBigNumber =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoidyIsImNoYW5uZWwiOiJjaGF0IiwidXNlcl9pZCI6MTIzNDU2Nzg5MDEyMzQ1Njc4OTAsInJhdGlvIjoxLjV9.ocqe0n0e3e1uyvgqhCctx_gmBRUSbPBaaUg5mPygQZk"
//   jwt.encode({"mode": "rw", "channel": "chat"}, None, algorithm="none")
private let pyNone = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJtb2RlIjoicnciLCJjaGFubmVsIjoiY2hhdCJ9."
//   jwt.encode({"mode": "rw", "channel": "chat", "exp": "4102444800"}, S, algorithm="HS256")
private let pyExpString =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoicnciLCJjaGFubmVsIjoiY2hhdCIsImV4cCI6IjQxMDI0NDQ4MDAifQ.w77YIzWbCp_lsvZXf5axZgS2hGexLztffS8iH1AOGOA"
//   jwt.api_jws.encode(b'["mode","rw"]', S, algorithm="HS256")
private let pyArrayClaims =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.WyJtb2RlIiwicnciXQ.Ss09dNk74wFg6FBk4lk7wTOyzmi3csWcPVxZUi6KIFs"
//   jwt.encode({"mode": "rw", "channel": "chat"}, S, algorithm="HS256", headers={"crit": ["exp"]})
private let pyCrit =
    "eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiZXhwIl0sInR5cCI6IkpXVCJ9.eyJtb2RlIjoicnciLCJjaGFubmVsIjoiY2hhdCJ9.p7kK7hi8LEnx2fE2yERkURAMlzDOW1844rbVoJJvYeI"
//   jwt.encode({"mode": "rw", "channel": "chat"}, "not-the-secret-but-long-enough-for-pyjwt-hmac-checks", algorithm="HS256")
private let pyOtherSecret =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJtb2RlIjoicnciLCJjaGFubmVsIjoiY2hhdCJ9.mGZ11Tc0bFBJcOMHrRGHE-KXSAMdxREw7wif3HUFjPw"

/// Signs arbitrary header and claims text with the library's HMAC (checked against the
/// PyJWT vectors above), for tokens that only differ from a valid one where a test says.
private func mint(header: String, claims: String, algorithm: JWTAlgorithm = .hs256, secret: [UInt8] = sampleSecret)
    -> String
{
    let input = b64url(header) + "." + b64url(claims)
    return input + "." + Base64.encode(algorithm.sign(key: secret, message: input), urlSafe: true, padded: false)
}

private func b64url(_ text: String) -> String {
    Base64.encode(Array(text.utf8), urlSafe: true, padded: false)
}

/// The reason a token is refused, or nil when it verifies.
private func refusal(_ token: String, at time: Double = now, verifier: JWTVerifier = sampleVerifier) -> String? {
    do {
        _ = try verifier.verify(Substring(token), now: time)
        return nil
    } catch {
        return error.reason
    }
}

private func parts(_ token: String) -> [String] {
    token.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
}

@Suite("JWTVerifier")
struct JWTVerifierTests {
    // MARK: valid tokens

    @Test("README token {\"mode\":\"rw\"} verifies")
    func readmeModeOnly() throws {
        let token = try sampleVerifier.verify(Substring(readmeRW), now: now)
        #expect(token.claims == .object([("mode", .string("rw"))]))
        #expect(token.expiresAt == nil)
    }

    @Test("README token {\"mode\":\"rw\",\"channel\":\"chat\"} verifies")
    func readmeWithChannel() throws {
        let token = try sampleVerifier.verify(Substring(readmeRWChat), now: now)
        #expect(token.claims == .object([("mode", .string("rw")), ("channel", .string("chat"))]))
        #expect(token.expiresAt == nil)
    }

    @Test("PyJWT tokens verify for every HMAC algorithm", arguments: [pyHS256, pyHS384, pyHS512])
    func pyjwtAlgorithms(token: String) throws {
        let verified = try sampleVerifier.verify(Substring(token), now: now)
        #expect(
            verified.claims
                == .object([
                    ("mode", .string("r")),
                    ("channels", .array([.string("a"), .string("b")])),
                    ("exp", .number("4102444800")),
                ]))
        #expect(verified.expiresAt == 4_102_444_800)
    }

    @Test("the token is verified inside a larger string (Substring with an offset)")
    func substringSlice() throws {
        let url = "/chat/" + readmeRWChat
        let token = url.split(separator: "/").last!
        let verified = try sampleVerifier.verify(token, now: now)
        #expect(verified.claims["channel"] == .string("chat"))
    }

    @Test("a unicode channel sent as \\u escapes and a surrogate pair decodes")
    func unicodeChannel() throws {
        let verified = try sampleVerifier.verify(Substring(pyUnicode), now: now)
        #expect(verified.claims["channel"]?.stringValue == "caf\u{E9}-\u{2615}-\u{1F600}")
        #expect(Array(verified.claims["channel"]!.stringValue!.utf8).count == 14)
    }

    @Test("claims keep their order and number text exactly")
    func claimsKeepText() throws {
        let verified = try sampleVerifier.verify(Substring(pyBigNumber), now: now)
        let original = String(decoding: Base64.decode(parts(pyBigNumber)[1])!, as: UTF8.self)
        #expect(original == #"{"mode":"w","channel":"chat","user_id":12345678901234567890,"ratio":1.5}"#)
        #expect(verified.claims.serialized == original)
    }

    // MARK: signatures

    @Test("a token signed with another secret is refused")
    func wrongSecret() {
        #expect(refusal(pyOtherSecret) == "invalid JWT signature")
        let other = JWTVerifier(
            secret: Array("auwhfdnskjhewfi34uwehdlaehsfkuaeiskjnfduierhfsiweskjcnzeiluwhskdewishdnpwf".utf8))
        #expect(refusal(readmeRWChat, verifier: other) == "invalid JWT signature")
        #expect(refusal(pyHS512, verifier: JWTVerifier(secret: [])) == "invalid JWT signature")
    }

    @Test("flipping any single bit of the signature is refused", arguments: [pyHS256, pyHS384, pyHS512])
    func signatureBitFlips(token: String) throws {
        let segments = parts(token)
        let signature = try #require(Base64.decode(segments[2]))
        #expect(refusal(token) == nil)
        var accepted: [Int] = []
        for bit in 0..<(signature.count * 8) {
            var flipped = signature
            flipped[bit / 8] ^= 1 << UInt8(bit % 8)
            let forged = segments[0] + "." + segments[1] + "." + Base64.encode(flipped, urlSafe: true, padded: false)
            if refusal(forged) != "invalid JWT signature" { accepted.append(bit) }
        }
        #expect(accepted == [], "bits whose flip was not refused as a bad signature")
    }

    @Test("a second spelling of the signature's last character (non-zero pad bits) is refused")
    func signaturePadBits() {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        for token in [pyHS256, pyHS384, pyHS512] {
            let body = String(token.dropLast())
            let accepted = alphabet.filter { refusal(body + String($0)) == nil }
            #expect(accepted == [token.last!])
        }
    }

    @Test("only unpadded base64url is accepted: padding or the standard alphabet is refused")
    func strictBase64URL() {
        let segments = readmeRWChat.split(separator: ".").map(String.init)
        #expect(refusal(readmeRWChat + "=") != nil)
        #expect(refusal(segments[0] + "." + segments[1] + "=." + segments[2]) != nil)
        let signature = Base64.decode(segments[2])!
        let standard = Base64.encode(signature, urlSafe: false, padded: true)
        #expect(standard != segments[2])
        #expect(refusal(segments[0] + "." + segments[1] + "." + standard) == "invalid JWT signature")
    }

    @Test("changing any character of the header or claims breaks the signature")
    func signedTextTampering() {
        let token = readmeRWChat
        let signatureStart = token.lastIndex(of: ".")!
        var accepted: [Int] = []
        for (offset, index) in token[..<signatureStart].indices.enumerated() where token[index] != "." {
            let replacement: Character = token[index] == "A" ? "B" : "A"
            var forged = token
            forged.replaceSubrange(index...index, with: String(replacement))
            if refusal(forged) == nil { accepted.append(offset) }
        }
        #expect(accepted == [])
    }

    @Test("every truncation of a valid token is refused", arguments: [readmeRWChat, pyHS256, pyHS384, pyHS512])
    func truncations(token: String) {
        let accepted = (0..<token.count).filter { refusal(String(token.prefix($0))) == nil }
        #expect(accepted == [])
        // Dropping the end of the claims segment while keeping the signature.
        let segments = parts(token)
        #expect(refusal(segments[0] + "." + segments[1].dropLast() + "." + segments[2]) != nil)
        #expect(refusal(segments[0] + "." + segments[1] + "." + segments[2].dropLast(4)) == "invalid JWT signature")
    }

    @Test("an HS384 token carrying the HS256 header (and the reverse) is refused")
    func algorithmSwap() {
        let hs256Header = parts(pyHS256)[0]
        let hs384 = parts(pyHS384)
        #expect(refusal(hs256Header + "." + hs384[1] + "." + hs384[2]) == "invalid JWT signature")
        let hs256 = parts(pyHS256)
        #expect(refusal(hs384[0] + "." + hs256[1] + "." + hs256[2]) == "invalid JWT signature")
        let hs512Header = parts(pyHS512)[0]
        #expect(refusal(hs512Header + "." + hs256[1] + "." + hs256[2]) == "invalid JWT signature")
    }

    // MARK: algorithms

    @Test("alg none is refused, unsigned and signed, naming the algorithm")
    func algNone() {
        #expect(refusal(pyNone) == "unsupported JWT algorithm none")
        let claims = #"{"mode":"rw","channel":"chat"}"#
        #expect(
            refusal(mint(header: #"{"alg":"none","typ":"JWT"}"#, claims: claims)) == "unsupported JWT algorithm none")
        #expect(refusal(mint(header: #"{"alg":"None"}"#, claims: claims)) == "unsupported JWT algorithm None")
        #expect(refusal(mint(header: #"{"alg":"NONE"}"#, claims: claims)) == "unsupported JWT algorithm NONE")
        #expect(refusal(mint(header: #"{"alg":""}"#, claims: claims)) == "unsupported JWT algorithm ")
    }

    @Test(
        "asymmetric and unknown algorithms are refused naming them",
        arguments: ["RS256", "ES256", "PS512", "EdDSA", "HS1024", "hs256", "HS256 "])
    func otherAlgorithms(alg: String) {
        let token = mint(header: #"{"alg":"\#(alg)","typ":"JWT"}"#, claims: #"{"mode":"rw"}"#)
        let expected = "unsupported JWT algorithm " + alg.replacingSpaces()
        #expect(refusal(token) == expected)
    }

    @Test("an algorithm name from the token is shortened and stripped of control characters")
    func printableAlgorithm() {
        let long = String(repeating: "X", count: 40)
        #expect(
            refusal(mint(header: #"{"alg":"\#(long)"}"#, claims: "{}")) == "unsupported JWT algorithm "
                + String(repeating: "X", count: 32) + "...")
        #expect(refusal(mint(header: #"{"alg":"A\nB\u007fC"}"#, claims: "{}")) == "unsupported JWT algorithm A?B?C")
    }

    @Test("a header without a string alg is refused")
    func missingAlg() {
        #expect(refusal(mint(header: #"{"typ":"JWT"}"#, claims: #"{"mode":"rw"}"#)) == "JWT header has no alg")
        #expect(refusal(mint(header: #"{"alg":256}"#, claims: #"{"mode":"rw"}"#)) == "JWT header has no alg")
        #expect(refusal(mint(header: #"{"alg":null}"#, claims: #"{"mode":"rw"}"#)) == "JWT header has no alg")
    }

    @Test("a crit header is refused")
    func critHeader() {
        #expect(refusal(pyCrit) == "unsupported JWT crit header")
        #expect(
            refusal(mint(header: #"{"alg":"HS256","crit":[]}"#, claims: #"{"mode":"rw"}"#))
                == "unsupported JWT crit header")
    }

    // MARK: time claims

    @Test("an expired token is refused")
    func expired() {
        #expect(refusal(pyExpired) == "JWT expired")
        #expect(refusal(pyExpired, at: 999_999_999.999) == nil)
    }

    @Test("exp is exclusive: a token is expired at the exp second itself")
    func expiryBoundary() throws {
        #expect(refusal(pyHS256, at: 4_102_444_800) == "JWT expired")
        #expect(refusal(pyHS256, at: 4_102_444_799.999) == nil)
        let token = try sampleVerifier.verify(Substring(pyExpired), now: 999_999_999)
        #expect(token.expiresAt == 1_000_000_000)
    }

    @Test("a token before its nbf is refused, from nbf on it is valid")
    func notBefore() {
        #expect(refusal(pyNotBefore) == "JWT not yet valid")
        #expect(refusal(pyNotBefore, at: 4_102_444_799.5) == "JWT not yet valid")
        #expect(refusal(pyNotBefore, at: 4_102_444_800) == nil)
    }

    @Test("time claims that are not finite numbers are refused")
    func timeClaimTypes() {
        #expect(refusal(pyExpString) == "JWT exp claim is not a number")
        for (claims, reason) in [
            (#"{"mode":"rw","nbf":"0"}"#, "JWT nbf claim is not a number"),
            (#"{"mode":"rw","exp":null}"#, "JWT exp claim is not a number"),
            (#"{"mode":"rw","exp":true}"#, "JWT exp claim is not a number"),
            (#"{"mode":"rw","exp":[4102444800]}"#, "JWT exp claim is not a number"),
            (#"{"mode":"rw","exp":1e400}"#, "JWT exp claim is not a number"),
            (#"{"mode":"rw","nbf":-1e400}"#, "JWT nbf claim is not a number"),
        ] {
            #expect(refusal(mint(header: #"{"alg":"HS256"}"#, claims: claims)) == reason, "\(claims)")
        }
        #expect(refusal(mint(header: #"{"alg":"HS256"}"#, claims: #"{"exp":4.1e9,"nbf":-1}"#)) == nil)
    }

    // MARK: structure

    @Test("tokens without exactly three segments are malformed")
    func segmentCount() {
        for token in ["", ".", "..x.", "abc", "a.b", readmeRW + ".", readmeRW + "." + parts(readmeRW)[2]] {
            #expect(refusal(token) == "malformed JWT", "\(token)")
        }
    }

    @Test("headers that are not a base64url JSON object are refused")
    func badHeader() {
        let rest = "." + parts(readmeRW)[1] + "." + parts(readmeRW)[2]
        for header in [
            b64url("not json"), b64url(#"["alg","HS256"]"#), b64url(#""HS256""#), b64url(#"{"alg":"HS256""#), "e!J", "",
            "eyJhbGciOiJIUzI1NiJ9x",
        ] {
            #expect(refusal(header + rest) == "malformed JWT header", "\(header)")
        }
        #expect(
            refusal(mint(header: #"{"alg":"HS256","alg":"none"}"#, claims: #"{"mode":"rw"}"#)) == "malformed JWT header"
        )
    }

    @Test("correctly signed claims that are not a JSON object are refused")
    func badClaims() {
        #expect(refusal(pyArrayClaims) == "malformed JWT claims")
        for claims in [
            "not json", #""rw""#, "42", "null", #"{"mode":"rw""#, #"{"mode":"r","mode":"rw"}"#, "{\"mode\":\"\u{7}\"}",
        ] {
            #expect(refusal(mint(header: #"{"alg":"HS256"}"#, claims: claims)) == "malformed JWT claims", "\(claims)")
        }
        // Invalid UTF-8 inside the claims.
        let input =
            b64url(#"{"alg":"HS256"}"#) + "."
            + Base64.encode([0x7B, 0x22, 0xC3, 0x22, 0x3A, 0x31, 0x7D], urlSafe: true, padded: false)
        let token =
            input + "."
            + Base64.encode(JWTAlgorithm.hs256.sign(key: sampleSecret, message: input), urlSafe: true, padded: false)
        #expect(refusal(token) == "malformed JWT claims")
    }

    @Test("a claims segment that is not base64 but correctly signed is refused")
    func claimsNotBase64() {
        let input = b64url(#"{"alg":"HS256"}"#) + ".e30!"
        let token =
            input + "."
            + Base64.encode(JWTAlgorithm.hs256.sign(key: sampleSecret, message: input), urlSafe: true, padded: false)
        #expect(refusal(token) == "malformed JWT claims")
    }

    @Test("tokens longer than maxTokenLength are refused before anything else, shorter ones are not")
    func tokenLength() throws {
        let limit = JWTVerifier.maxTokenLength
        #expect(refusal(String(repeating: "a", count: limit + 1)) == "JWT too long")
        // Correctly signed tokens just under and just over the limit.
        var fitting: String? = nil
        var tooLong: String? = nil
        var filler = limit * 3 / 4 - 200
        while tooLong == nil {
            let token = mint(
                header: #"{"alg":"HS256"}"#, claims: #"{"mode":"r","pad":"\#(String(repeating: "p", count: filler))"}"#)
            if token.utf8.count <= limit { fitting = token } else { tooLong = token }
            filler += 1
        }
        let fits = try #require(fitting)
        #expect(fits.utf8.count > limit - 4)
        #expect(refusal(fits) == nil)
        #expect(refusal(try #require(tooLong)) == "JWT too long")
    }

    @Test("the reasons the code defines are the documented texts")
    func reasonTexts() {
        #expect(TokenError.malformed.reason == "malformed JWT")
        #expect(TokenError.badSignature.reason == "invalid JWT signature")
        #expect(TokenError.expired.reason == "JWT expired")
        #expect(TokenError.notYetValid.reason == "JWT not yet valid")
        #expect(TokenError.expired.description == "JWT expired")
    }
}

@Suite("JWTAlgorithm")
struct JWTAlgorithmTests {
    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    @Test("HMAC matches RFC 4231 test case 2 for SHA-256, SHA-384 and SHA-512")
    func rfc4231() {
        let key = Array("Jefe".utf8)
        let data = "what do ya want for nothing?"
        #expect(
            hex(JWTAlgorithm.hs256.sign(key: key, message: data))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(
            hex(JWTAlgorithm.hs384.sign(key: key, message: data))
                == "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649")
        #expect(
            hex(JWTAlgorithm.hs512.sign(key: key, message: data))
                == "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        )
    }

    @Test("constantTimeEquals compares content and length")
    func constantTime() {
        #expect(constantTimeEquals([], []))
        #expect(constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2]))
        #expect(!constantTimeEquals([], [0]))
    }

    private func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}

extension String {
    /// What `JWTVerifier.printable` makes of spaces.
    fileprivate func replacingSpaces() -> String {
        String(map { $0 == " " ? "?" : $0 })
    }
}
