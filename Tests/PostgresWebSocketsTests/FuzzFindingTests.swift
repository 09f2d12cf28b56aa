import Testing

@testable import PostgresWebSockets

/// One test per finding of the fuzz targets (Fuzz/, `make fuzz`): the input that failed,
/// reduced, and the behaviour it must have. The input itself is also in the target's corpus.
@Suite("Fuzz findings")
struct FuzzFindingTests {
    /// config, Fuzz/Corpus/config/seed-13-combining: a quoted value that starts with a
    /// combining mark was read as a bare value, quotes included (`"` and U+0301 are one
    /// Character), and its canonical form `"\"\u{301}..."` failed with "unknown escape".
    @Test("a quoted configuration value may start with a combining mark")
    func configurationValueStartingWithCombiningMark() throws {
        let file = try ConfigurationFile(path: "test.conf", contents: "jwt-secret = \"\u{301}abc\"\n")
        #expect(file.entries[.jwtSecret]?.value.unicodeScalars.elementsEqual("\u{301}abc".unicodeScalars) == true)
        let escaped = try ConfigurationFile(path: "test.conf", contents: "jwt-secret = \"\\\"\u{301}abc\\\"\"\n")
        #expect(
            escaped.entries[.jwtSecret]?.value.unicodeScalars.elementsEqual("\"\u{301}abc\"".unicodeScalars) == true)
        #expect(throws: ConfigurationError.self) {
            try ConfigurationFile(path: "test.conf", contents: "jwt-secret = \"abc\"\u{301}\n")
        }
        let comment = try ConfigurationFile(
            path: "test.conf", contents: "#\u{301} a comment\nserver-port = 1 #\u{301}\n")
        #expect(comment.entries[.port]?.value == "1")
    }

    /// json, Fuzz/Corpus/json/bom-after-escape and bom-after-escape-in-key: Foundation, which
    /// the target compares with, drops a U+FEFF that follows an escape; only a leading byte
    /// order mark may be left out (RFC 8259 8.1), so ours keeps it, in values and in keys.
    @Test("a U+FEFF inside a string or key is kept, also right after an escape")
    func byteOrderMarkInsideAStringIsKept() throws {
        let value = try JSONParser.parse(Array("{\"a\\n\u{FEFF}b\":\"\\t\u{FEFF}c\"}".utf8))
        guard case .object(let members) = value, let member = members.first else {
            Issue.record("not an object: \(value)")
            return
        }
        #expect(member.key.unicodeScalars.elementsEqual("a\n\u{FEFF}b".unicodeScalars))
        #expect(member.value.stringValue?.unicodeScalars.elementsEqual("\t\u{FEFF}c".unicodeScalars) == true)
    }

    /// config, Fuzz/Corpus/config/cr-in-key: a lone CR in a line (`\ruri = ...`) came back in
    /// the error, which a terminal or a log line then shows rewritten. Errors quote the file's
    /// text with control characters escaped.
    @Test("configuration errors quote the file's text with control characters escaped")
    func configurationErrorsEscapeControlCharacters() {
        let cases: [(String, String)] = [
            ("db-uri = \"x\"\n\ruri = 1\n", "test.conf:2: unknown key '\\u{d}uri'"),
            (
                "db-uri = \"$(A\u{1B}B)\"\n",
                "test.conf:1: 'db-uri' uses $(A\\u{1b}B), which is not set in the environment"
            ),
            ("db-uri = \"\\\u{7}\"\n", "test.conf:1: unknown escape '\\\\u{7}' for 'db-uri'"),
        ]
        for (contents, message) in cases {
            #expect(throws: ConfigurationError(message)) {
                try ConfigurationFile(path: "test.conf", contents: contents)
            }
        }
    }

    /// config, Fuzz/Corpus/config/cr-in-value: a value refused when the configuration is
    /// built came back in the error as it was, lone CR included.
    @Test("a refused configuration value is quoted with control characters escaped")
    func configurationValueErrorsEscapeControlCharacters() throws {
        let contents = "db-uri = \"postgres://localhost/db\"\njwt-secret = \"s3cret\"\npool-size = 3\r4\n"
        #expect(
            throws: ConfigurationError("test.conf:3: pool-size must be a whole number from 1 to 64, got '3\\u{d}4'")
        ) {
            try Configuration.load(file: ConfigurationFile(path: "test.conf", contents: contents), environment: [:])
        }
        let environment = [
            "PGWS_DB_URI": "postgres://localhost/db", "PGWS_JWT_SECRET": "s3cret", "PGWS_POOL_SIZE": "\u{1B}[2J",
        ]
        #expect(throws: ConfigurationError("PGWS_POOL_SIZE must be a whole number from 1 to 64, got '\\u{1b}[2J'")) {
            try Configuration.load(file: nil, environment: environment)
        }
    }
}
