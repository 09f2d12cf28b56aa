import Foundation
import Logging
import NIOCore
import Testing

@testable import PostgresWebSockets

private let secret = "auwhfdnskjhewfi34uwehdlaehsfkuaeiskjnfduierhfsiweskjcnzeiluwhskdewishdnpwe"
/// The two settings without a default.
private let required = ["PGWS_DB_URI": "postgres://localhost/db", "PGWS_JWT_SECRET": "s3cret"]

private func file(_ contents: String, path: String = "test.conf") throws -> ConfigurationFile {
    try ConfigurationFile(path: path, contents: contents)
}

/// The message of the error that parsing `contents` throws, or nil when it parses.
private func fileError(_ contents: String) -> String? {
    do {
        _ = try ConfigurationFile(path: "test.conf", contents: contents)
        return nil
    } catch {
        return error.message
    }
}

private func load(_ contents: String? = nil, environment: [String: String] = [:]) throws -> Configuration {
    try Configuration.load(file: contents.map { try file($0) }, environment: environment)
}

/// The message of the error that loading throws, or nil when it loads.
private func loadError(_ contents: String? = nil, environment: [String: String] = [:]) -> String? {
    do {
        _ = try Configuration.load(file: contents.map { try file($0) }, environment: environment)
        return nil
    } catch let error as ConfigurationError {
        return error.message
    } catch {
        return "unexpected \(error)"
    }
}

/// A file under the temporary directory, removed by `remove()`.
private struct TemporaryFile {
    let path: String
    init(_ contents: String) throws {
        path =
            FileManager.default.temporaryDirectory
            .appendingPathComponent("pgws-config-test-\(UUID().uuidString)").path
        try contents.write(toFile: path, atomically: false, encoding: .utf8)
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

@Suite("ConfigurationFile")
struct ConfigurationFileTests {
    @Test("sample.conf-style files parse: strings, numbers, booleans, comments, blank lines")
    func sampleStyle() throws {
        let parsed = try file(
            """
            ## A comment

            db-uri = "postgres://postgres@127.0.0.1:54329/postgres"
              # indented comment
            server-port = 3000
            server-host="*"
            secret-is-base64 = False
            pool-size	=	4   # trailing comment
            audit-channel = "au#dit" # a # inside quotes is kept
            jwt-secret = "a \\"quoted\\" \\\\ back\\tslash\\nnew"

            """)
        #expect(parsed.path == "test.conf")
        #expect(
            parsed.entries[.databaseURI]
                == ConfigurationFile.Entry(value: "postgres://postgres@127.0.0.1:54329/postgres", line: 3))
        #expect(parsed.entries[.port] == ConfigurationFile.Entry(value: "3000", line: 5))
        #expect(parsed.entries[.host]?.value == "*")
        #expect(parsed.entries[.secretIsBase64]?.value == "False")
        #expect(parsed.entries[.poolSize] == ConfigurationFile.Entry(value: "4", line: 8))
        #expect(parsed.entries[.auditChannel]?.value == "au#dit")
        #expect(parsed.entries[.jwtSecret]?.value == "a \"quoted\" \\ back\tslash\nnew")
        #expect(parsed.entries.count == 7)
    }

    @Test("the repository's sample.conf parses and loads")
    func repositorySample() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let path = root.appendingPathComponent("sample.conf").path
        let config = try Configuration.load(path: path, environment: [:])
        #expect(config.databaseURI == "postgres://postgres@127.0.0.1:54329/postgres")
        #expect(config.jwtSecret == Array(secret.utf8))
        #expect(config.server.host == "127.0.0.1")
        #expect(config.server.port == 3000)
        #expect(config.server.rootPath == "client-example")
        #expect(config.channels.auditChannel == "audit")
        #expect(config.channels.metaChannel == "server-info")
        #expect(config.notifier.poolSize == 2)
    }

    @Test("Windows line endings are accepted")
    func crlf() throws {
        let parsed = try file("server-port = 3000\r\nserver-host = \"h\"\r\n")
        #expect(parsed.entries[.port]?.value == "3000")
        #expect(parsed.entries[.host]?.value == "h")
        #expect(parsed.entries[.host]?.line == 2)
        #expect(fileError("# c\r\n\r\nnot-a-key = 1\r\n") == "test.conf:3: unknown key 'not-a-key'")
    }

    @Test("an unknown key names the key and file:line")
    func unknownKey() {
        let message = fileError("server-port = 1\n\nnot-a-key = 2\n")
        #expect(message == "test.conf:3: unknown key 'not-a-key'")
        #expect(fileError("server_port = 1") == "test.conf:1: unknown key 'server_port'")
    }

    @Test("a key set twice is an error naming both lines")
    func duplicateKey() {
        #expect(
            fileError("server-port = 1\n# x\nserver-port = 2\n")
                == "test.conf:3: 'server-port' is already set on line 1")
    }

    @Test("syntax errors name file:line and the key")
    func syntaxErrors() {
        #expect(fileError("server-port 3000") == "test.conf:1: expected 'key = value'")
        #expect(fileError("server-port =") == "test.conf:1: 'server-port' has no value")
        #expect(fileError("server-port = # nothing") == "test.conf:1: 'server-port' has no value")
        #expect(fileError("\nserver-host = \"abc") == "test.conf:2: unterminated string for 'server-host'")
        #expect(fileError("server-host = \"abc\\") == "test.conf:1: unterminated string for 'server-host'")
        #expect(fileError("server-host = \"a\\qb\"") == "test.conf:1: unknown escape '\\q' for 'server-host'")
        #expect(fileError("server-host = \"a\" b") == "test.conf:1: unexpected text after the value of 'server-host'")
    }

    @Test("empty quoted strings are values")
    func emptyString() throws {
        #expect(try file("server-host = \"\"").entries[.host]?.value == "")
    }
}

@Suite("Configuration.load")
struct ConfigurationLoadTests {
    @Test("defaults apply when only the required settings are given")
    func defaults() throws {
        let config = try load(environment: required)
        #expect(config.databaseURI == "postgres://localhost/db")
        #expect(config.jwtSecret == Array("s3cret".utf8))
        #expect(config.server.host == "*4", "every IPv4 address, as postgres-websockets")
        #expect(config.channels.listenChannel == "postgres-websockets-listener")
        #expect(config.channels.publishTo == .channel)
        #expect(config.server.port == 3000)
        #expect(config.server.rootPath == nil)
        #expect(config.channels.auditChannel == nil)
        #expect(config.channels.metaChannel == nil)
        #expect(config.notifier.poolSize == 2)
        #expect(config.notifier.maxPendingMessages == 10_000)
        #expect(config.limits.maxSocketBuffer == 64 << 10)
        #expect(config.limits.maxLag == 64 << 20)
        #expect(config.limits.maxLagDuration == .seconds(30))
        #expect(config.limits.maxMessageSize == 7999)
        #expect(config.limits.maxConnections == 10_000)
        #expect(config.limits.handshakeTimeout == .fromSeconds(10))
        #expect(config.limits.maxHeaderSize == 16 * 1024)
        #expect(config.limits.pingInterval == .fromSeconds(30))
        #expect(config.limits.pongTimeout == .fromSeconds(10))
        #expect(config.server.allowedOrigins == nil)
        #expect(config.tls == nil)
        #expect(config.logLevel == .info)
        #expect(config.jwtAudience == nil)
        #expect(config.jwks == nil)
    }

    @Test("every key has its environment variable")
    func environmentNames() {
        #expect(ConfigurationKey.databaseURI.environmentVariable == "PGWS_DB_URI")
        #expect(ConfigurationKey.jwtSecret.environmentVariable == "PGWS_JWT_SECRET")
        #expect(ConfigurationKey.secretIsBase64.environmentVariable == "PGWS_JWT_SECRET_BASE64")
        #expect(ConfigurationKey.host.environmentVariable == "PGWS_HOST")
        #expect(ConfigurationKey.port.environmentVariable == "PGWS_PORT")
        #expect(ConfigurationKey.rootPath.environmentVariable == "PGWS_ROOT_PATH")
        #expect(ConfigurationKey.auditChannel.environmentVariable == "PGWS_AUDIT_CHANNEL")
        #expect(ConfigurationKey.metaChannel.environmentVariable == "PGWS_META_CHANNEL")
        #expect(ConfigurationKey.poolSize.environmentVariable == "PGWS_POOL_SIZE")
        #expect(ConfigurationKey.certificateFile.environmentVariable == "PGWS_CERTIFICATE_FILE")
        #expect(ConfigurationKey.keyFile.environmentVariable == "PGWS_KEY_FILE")
        let variables = ConfigurationKey.allCases.map(\.environmentVariable)
        #expect(Set(variables).count == variables.count)
        #expect(variables.allSatisfy { $0.hasPrefix("PGWS_") })
    }

    @Test("every setting is read from the file")
    func fromFile() throws {
        let config = try load(
            """
            db-uri = "postgres://file/db"
            jwt-secret = "file-secret"
            server-host = "0.0.0.0"
            server-port = 0
            server-root = "www"
            audit-channel = "audit"
            meta-channel = "server-info"
            pool-size = 64
            max-pending-messages = 5
            max-socket-buffer = 1024
            max-lag = 1048576
            max-lag-seconds = 2.5
            max-message-size = 100
            max-connections = 7
            handshake-timeout = 2.5
            max-header-size = 2048
            ping-interval = 86400
            pong-timeout = 0.25
            allowed-origins = " http://a.example , https://b.example,, "
            certificate-file = "/etc/pgws/fullchain.pem"
            key-file = "/etc/pgws/key.pem"
            log-level = "DEBUG"
            """)
        #expect(config.databaseURI == "postgres://file/db")
        #expect(config.jwtSecret == Array("file-secret".utf8))
        #expect(config.server.host == "0.0.0.0")
        #expect(config.server.port == 0)
        #expect(config.server.rootPath == "www")
        #expect(config.channels.auditChannel == "audit")
        #expect(config.channels.metaChannel == "server-info")
        #expect(config.notifier.poolSize == 64)
        #expect(config.notifier.maxPendingMessages == 5)
        #expect(config.limits.maxSocketBuffer == 1024)
        #expect(config.limits.maxLag == 1 << 20)
        #expect(config.limits.maxLagDuration == .fromSeconds(2.5))
        #expect(config.limits.maxMessageSize == 100)
        #expect(config.limits.maxConnections == 7)
        #expect(config.limits.handshakeTimeout == .fromSeconds(2.5))
        #expect(config.limits.maxHeaderSize == 2048)
        #expect(config.limits.pingInterval == .fromSeconds(86400))
        #expect(config.limits.pongTimeout == .fromSeconds(0.25))
        #expect(config.server.allowedOrigins == ["http://a.example", "https://b.example"])
        #expect(config.tls == TLSSettings(certificateFile: "/etc/pgws/fullchain.pem", keyFile: "/etc/pgws/key.pem"))
        #expect(config.logLevel == .debug)
    }

    @Test("environment variables override the file; empty ones are ignored")
    func environmentOverrides() throws {
        let contents = """
            db-uri = "postgres://file/db"
            jwt-secret = "file-secret"
            server-port = 3000
            server-host = "file-host"
            """
        let config = try load(
            contents,
            environment: [
                "PGWS_PORT": "4000", "PGWS_JWT_SECRET": "env-secret", "PGWS_HOST": "", "PGWS_AUDIT_CHANNEL": "a",
            ])
        #expect(config.server.port == 4000)
        #expect(config.jwtSecret == Array("env-secret".utf8))
        #expect(config.server.host == "file-host")
        #expect(config.databaseURI == "postgres://file/db")
        #expect(config.channels.auditChannel == "a")
    }

    @Test("a missing db-uri, or neither jwt-secret nor jwks-url, names the keys and their environment variables")
    func missingRequired() {
        #expect(
            loadError(environment: ["PGWS_JWT_SECRET": "x"])
                == "db-uri is required: set it in the config file or in PGWS_DB_URI")
        #expect(
            loadError(environment: ["PGWS_DB_URI": "postgres://x"])
                == "jwt-secret or jwks-url is required: set one or both in the config file or in PGWS_JWT_SECRET / "
                + "PGWS_JWKS_URL")
        #expect(loadError("server-port = 1\n")?.contains("db-uri") == true)
        #expect(
            loadError(environment: ["PGWS_DB_URI": "postgres://x", "PGWS_JWT_SECRET": ""])?.contains("PGWS_JWT_SECRET")
                == true)
    }

    @Test("empty db-uri or jwt-secret from the file is refused naming where it came from")
    func emptyRequired() {
        #expect(loadError("db-uri = \"  \"\njwt-secret = \"x\"") == "test.conf:1: db-uri is empty")
        #expect(loadError("db-uri = \"x\"\njwt-secret = \"\"") == "test.conf:2: jwt-secret is empty")
    }

    @Test("@path reads db-uri and jwt-secret from files; one trailing newline is dropped from the secret")
    func pathSettings() throws {
        let uriFile = try TemporaryFile("  postgres://from-file/db\n")
        let secretFile = try TemporaryFile("file secret \n")
        let twoNewlines = try TemporaryFile("abc\n\n")
        let noNewline = try TemporaryFile("abc")
        let crlf = try TemporaryFile("abc\r\n")
        defer { [uriFile, secretFile, twoNewlines, noNewline, crlf].forEach { $0.remove() } }

        let config = try load(environment: [
            "PGWS_DB_URI": "@" + uriFile.path, "PGWS_JWT_SECRET": "@" + secretFile.path,
        ])
        #expect(config.databaseURI == "postgres://from-file/db")
        #expect(config.jwtSecret == Array("file secret ".utf8))

        let fromConf = try load("db-uri = \"@\(uriFile.path)\"\njwt-secret = \"@\(twoNewlines.path)\"")
        #expect(fromConf.jwtSecret == Array("abc\n".utf8))
        #expect(
            try load(environment: ["PGWS_DB_URI": "x", "PGWS_JWT_SECRET": "@" + noNewline.path]).jwtSecret
                == Array("abc".utf8))
        #expect(
            try load(environment: ["PGWS_DB_URI": "x", "PGWS_JWT_SECRET": "@" + crlf.path]).jwtSecret
                == Array("abc".utf8))
        // Without @ a trailing newline is part of the secret.
        #expect(
            try load(environment: ["PGWS_DB_URI": "x", "PGWS_JWT_SECRET": "abc\n"]).jwtSecret == Array("abc\n".utf8))
    }

    @Test("an unreadable @path names the key and the file")
    func missingPathFile() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pgws-missing-\(UUID().uuidString)")
            .path
        let message = try #require(loadError(environment: ["PGWS_DB_URI": "x", "PGWS_JWT_SECRET": "@" + path]))
        #expect(message.hasPrefix("PGWS_JWT_SECRET: cannot read \(path)"))
        let fromFile = try #require(loadError("db-uri = \"@\(path)\"\njwt-secret = \"x\""))
        #expect(fromFile.hasPrefix("test.conf:1: db-uri: cannot read \(path)"))
    }

    @Test("Configuration.load(path:) reads the file and reports its errors with its path")
    func loadPath() throws {
        let conf = try TemporaryFile("db-uri = \"postgres://p\"\njwt-secret = \"s\"\nserver-port = 70000\n")
        defer { conf.remove() }
        #expect(
            throws: ConfigurationError(
                "\(conf.path):3: server-port must be a whole number from 0 to 65535, got '70000'")
        ) {
            try Configuration.load(path: conf.path, environment: [:])
        }
        let config = try Configuration.load(path: conf.path, environment: ["PGWS_PORT": "1"])
        #expect(config.server.port == 1)
        #expect(config.databaseURI == "postgres://p")
    }

    @Test("secret-is-base64 decodes both alphabets and accepts every spelling of true and false")
    func base64Secret() throws {
        let bytes: [UInt8] = [0xFB, 0xFF, 0xBF, 0x00, 0x01]
        for spelling in ["true", "True", "TRUE"] {
            let standard = try load(environment: [
                "PGWS_DB_URI": "x", "PGWS_JWT_SECRET": "+/+/AAE=", "PGWS_JWT_SECRET_BASE64": spelling,
            ])
            #expect(standard.jwtSecret == bytes)
        }
        let url = try load("db-uri = \"x\"\njwt-secret = \"-_-_AAE\"\nsecret-is-base64 = True")
        #expect(url.jwtSecret == bytes)
        for spelling in ["false", "False", "FALSE"] {
            let plain = try load(environment: [
                "PGWS_DB_URI": "x", "PGWS_JWT_SECRET": "-_-_AAE", "PGWS_JWT_SECRET_BASE64": spelling,
            ])
            #expect(plain.jwtSecret == Array("-_-_AAE".utf8))
        }
        // Surrounding whitespace (a newline from an @file) is not part of the base64 text.
        let spaced = try load(environment: [
            "PGWS_DB_URI": "x", "PGWS_JWT_SECRET": " +/+/AAE=\n", "PGWS_JWT_SECRET_BASE64": "true",
        ])
        #expect(spaced.jwtSecret == bytes)
    }

    @Test("secret-is-base64 refuses junk without echoing the secret")
    func base64Junk() throws {
        for junk in ["not base64!", "a", "Zh==", "QQ=A"] {
            let message = try #require(
                loadError(environment: ["PGWS_DB_URI": "x", "PGWS_JWT_SECRET": junk, "PGWS_JWT_SECRET_BASE64": "true"]))
            #expect(message == "PGWS_JWT_SECRET is not valid base64 although secret-is-base64 is true")
        }
        #expect(
            loadError(environment: ["PGWS_DB_URI": "x", "PGWS_JWT_SECRET": "", "PGWS_JWT_SECRET_BASE64": "true"])
                == "jwt-secret or jwks-url is required: set one or both in the config file or in PGWS_JWT_SECRET / "
                + "PGWS_JWKS_URL")
        #expect(
            loadError("db-uri = \"x\"\njwt-secret = \"\"\nsecret-is-base64 = true")
                == "test.conf:2: jwt-secret is empty")
        #expect(
            loadError(environment: ["PGWS_DB_URI": "x", "PGWS_JWT_SECRET": "x", "PGWS_JWT_SECRET_BASE64": "yes"])
                == "PGWS_JWT_SECRET_BASE64 must be true or false, got 'yes'")
    }

    @Test("no jwt-secret error contains the secret")
    func secretNeverEchoed() throws {
        let marker = "Sup3rS3cretValue!"
        var messages: [String] = []
        messages.append(
            try #require(
                loadError(environment: [
                    "PGWS_DB_URI": "x", "PGWS_JWT_SECRET": marker, "PGWS_JWT_SECRET_BASE64": "true",
                ])))
        messages.append(try #require(loadError("db-uri = \"x\"\njwt-secret = \"\(marker)\"\nsecret-is-base64 = true")))
        messages.append(try #require(fileError("jwt-secret = \"\(marker)")))
        messages.append(try #require(fileError("jwt-secret = \"\(marker)\" trailing")))
        messages.append(try #require(fileError("jwt-secret = \"\(marker)\"\njwt-secret = \"\(marker)\"")))
        for message in messages {
            #expect(!message.contains(marker), "\(message)")
            #expect(!message.contains("Sup3r"), "\(message)")
            #expect(message.contains("jwt-secret") || message.contains("PGWS_JWT_SECRET"), "\(message)")
        }
    }

    @Test("numbers outside their range are refused naming key, range and value")
    func numericRanges() {
        let base = "db-uri = \"x\"\njwt-secret = \"y\"\n"
        #expect(
            loadError(base + "server-port = 70000")
                == "test.conf:3: server-port must be a whole number from 0 to 65535, got '70000'")
        #expect(
            loadError(base + "server-port = -1")?.hasPrefix("test.conf:3: server-port must be a whole number") == true)
        #expect(loadError(base + "server-port = 80.5")?.hasSuffix("got '80.5'") == true)
        #expect(loadError(base + "server-port = \"http\"")?.hasSuffix("got 'http'") == true)
        #expect(
            loadError(base + "pool-size = 0") == "test.conf:3: pool-size must be a whole number from 1 to 64, got '0'")
        #expect(loadError(base + "pool-size = 65")?.contains("pool-size") == true)
        #expect(
            loadError(environment: required.merging(["PGWS_POOL_SIZE": "0"]) { $1 })
                == "PGWS_POOL_SIZE must be a whole number from 1 to 64, got '0'")
        #expect(loadError(base + "max-message-size = 1048577")?.contains("from 1 to 1048576") == true)
        #expect(
            loadError(base + "durable = sometimes") == "test.conf:3: durable must be off, on or check, got 'sometimes'")
        #expect(loadError(base + "max-socket-buffer = 1023")?.contains("max-socket-buffer") == true)
        #expect(loadError(base + "max-lag = 1048575")?.contains("max-lag") == true)
        #expect(loadError(base + "max-lag-seconds = 0")?.contains("max-lag-seconds") == true)
        #expect(loadError(base + "max-header-size = 1023")?.contains("max-header-size") == true)
        #expect(loadError(base + "max-connections = 0")?.contains("max-connections") == true)
        #expect(loadError(base + "max-pending-messages = 0")?.contains("max-pending-messages") == true)
        #expect(loadError(base + "server-port = 65535") == nil)
        #expect(loadError(base + "pool-size = 1") == nil)
    }

    @Test("durations must be above 0 and at most a day")
    func durations() {
        let base = "db-uri = \"x\"\njwt-secret = \"y\"\n"
        for bad in ["0", "-1", "86401", "nan", "inf", "ten"] {
            #expect(
                loadError(base + "ping-interval = \"\(bad)\"")
                    == "test.conf:3: ping-interval must be a number of seconds above 0 and at most 86400, got '\(bad)'")
        }
        #expect(loadError(base + "pong-timeout = 0")?.contains("pong-timeout") == true)
        #expect(loadError(base + "handshake-timeout = 0")?.contains("handshake-timeout") == true)
        #expect(loadError(base + "pong-timeout = 0.001") == nil)
    }

    @Test("audit-channel and meta-channel follow the channel name rules")
    func channelSettings() throws {
        let ok = String(repeating: "a", count: 63)
        let long = String(repeating: "a", count: 64)
        let config = try load(
            environment: required.merging(["PGWS_AUDIT_CHANNEL": ok, "PGWS_META_CHANNEL": ok]) { $1 })
        #expect(config.channels.auditChannel == ok)
        #expect(
            loadError(environment: required.merging(["PGWS_AUDIT_CHANNEL": long]) { $1 })
                == "PGWS_AUDIT_CHANNEL is not a channel name (channel name longer than 63 bytes), got '\(long)'")
        #expect(
            loadError(
                "db-uri = \"x\"\njwt-secret = \"y\"\nmeta-channel = \"\(String(repeating: "\u{E9}", count: 32))\"")?
                .hasPrefix("test.conf:3: meta-channel is not a channel name (channel name longer than 63 bytes)")
                == true)
        #expect(
            loadError("db-uri = \"x\"\njwt-secret = \"y\"\naudit-channel = \"\"")?
                .hasPrefix("test.conf:3: audit-channel is not a channel name (empty channel name)") == true)
    }

    @Test("log-level accepts swift-log level names in any case")
    func logLevels() throws {
        #expect(try load(environment: required.merging(["PGWS_LOG_LEVEL": "Trace"]) { $1 }).logLevel == .trace)
        #expect(try load(environment: required.merging(["PGWS_LOG_LEVEL": "critical"]) { $1 }).logLevel == .critical)
        #expect(
            loadError(environment: required.merging(["PGWS_LOG_LEVEL": "loud"]) { $1 })
                == "PGWS_LOG_LEVEL must be one of trace, debug, info, notice, warning, error, critical, got 'loud'")
    }

    @Test("listener-timeout sets how long the listener waits for an answer")
    func listenerTimeout() throws {
        #expect(try load(environment: required).listener.probeTimeout == .milliseconds(750))
        #expect(
            try load(environment: required.merging(["PGWS_LISTENER_TIMEOUT": "2.5"]) { $1 }).listener.probeTimeout
                == .milliseconds(2500))
        #expect(loadError(environment: required.merging(["PGWS_LISTENER_TIMEOUT": "0"]) { $1 }) != nil)
    }

    @Test("log-format is text unless json is asked for")
    func logFormats() throws {
        #expect(try load(environment: required).logFormat == .text)
        #expect(try load(environment: required.merging(["PGWS_LOG_FORMAT": "JSON"]) { $1 }).logFormat == .json)
        #expect(try load("db-uri = \"x\"\njwt-secret = \"y\"\nlog-format = \"text\"").logFormat == .text)
        #expect(
            loadError(environment: required.merging(["PGWS_LOG_FORMAT": "logfmt"]) { $1 })
                == "PGWS_LOG_FORMAT must be text or json, got 'logfmt'")
    }

    @Test("presence is off unless asked for; its claim defaults to sub and its fields to none")
    func presenceSettings() throws {
        let off = try load(environment: required)
        #expect(!off.presence.isEnabled && off.presence.claim == "sub" && off.presence.fields.isEmpty)
        let on = try load(
            environment: required.merging([
                "PGWS_PRESENCE": "on", "PGWS_PRESENCE_CLAIM": "user_id", "PGWS_PRESENCE_FIELDS": " name, avatar ,",
            ]) { $1 })
        #expect(on.presence.isEnabled && on.presence.claim == "user_id" && on.presence.fields == ["name", "avatar"])
        #expect(try load("db-uri = \"x\"\njwt-secret = \"y\"\npresence = true").presence.isEnabled)
        #expect(
            loadError(environment: required.merging(["PGWS_PRESENCE": "yes please"]) { $1 })
                == "PGWS_PRESENCE must be on or off, got 'yes please'")
        #expect(loadError("db-uri = \"x\"\njwt-secret = \"y\"\npresence-claim = \"\"") != nil)
    }

    @Test("allowed-origins that lists nothing allows every origin")
    func emptyOrigins() throws {
        #expect(try load(" allowed-origins = \" , \"\ndb-uri = \"x\"\njwt-secret = \"y\"").server.allowedOrigins == nil)
        #expect(
            try load(environment: required.merging(["PGWS_ALLOWED_ORIGINS": "http://x"]) { $1 }).server.allowedOrigins
                == [
                    "http://x"
                ])
    }

    // MARK: signing keys from a URL, audience

    @Test("jwt-audience is read from the file and the environment; an empty one in the file is refused")
    func audience() throws {
        #expect(try load(environment: required.merging(["PGWS_JWT_AUDIENCE": "pgws"]) { $1 }).jwtAudience == "pgws")
        let fromFile = try load("db-uri = \"x\"\njwt-secret = \"y\"\njwt-audience = \"https://api.example\"\n")
        #expect(fromFile.jwtAudience == "https://api.example")
        #expect(
            try load(
                "db-uri = \"x\"\njwt-secret = \"y\"\njwt-audience = \"file\"\n",
                environment: ["PGWS_JWT_AUDIENCE": "env"]
            ).jwtAudience == "env")
        #expect(
            loadError("db-uri = \"x\"\njwt-secret = \"y\"\njwt-audience = \"\"\n")
                == "test.conf:3: jwt-audience is empty")
        #expect(ConfigurationKey.jwtAudience.environmentVariable == "PGWS_JWT_AUDIENCE")
    }

    @Test("jwks-url alone is enough; with jwt-secret both are kept; the secret is then optional")
    func jwksURL() throws {
        let only = try load(environment: ["PGWS_DB_URI": "x", "PGWS_JWKS_URL": "https://idp.example/jwks.json"])
        #expect(only.jwtSecret == nil)
        #expect(only.jwks?.url == "https://idp.example/jwks.json")
        #expect(only.jwks?.caFile == nil)
        #expect(only.jwks?.defaultRefresh == .seconds(600))
        #expect(only.jwks?.minimumRefresh == .seconds(30))
        #expect(only.jwks?.unknownKeyInterval == .seconds(30))
        #expect(only.jwks?.retryInitial == .seconds(1))
        #expect(only.jwks?.retryMaximum == .seconds(60))
        #expect(only.jwks?.fetchTimeout == .seconds(10))
        #expect(only.jwks?.maxResponseBytes == 1 << 20)
        let both = try load(
            "db-uri = \"x\"\njwt-secret = \"y\"\njwks-url = \" http://127.0.0.1:8080/keys \"\njwks-ca-file = \"ca.pem\"\n"
        )
        #expect(both.jwtSecret == Array("y".utf8))
        #expect(both.jwks?.url == "http://127.0.0.1:8080/keys", "surrounding blanks are dropped")
        #expect(both.jwks?.caFile == "ca.pem")
        #expect(ConfigurationKey.jwksURL.environmentVariable == "PGWS_JWKS_URL")
        #expect(ConfigurationKey.jwksCAFile.environmentVariable == "PGWS_JWKS_CA_FILE")
    }

    @Test("a jwks-url that is not http or https stops start-up without echoing the URL")
    func badJWKSURL() {
        let base = ["PGWS_DB_URI": "x"]
        for url in ["ftp://idp.example/keys", "file:///etc/keys.json", "idp.example/keys", "https:///keys"] {
            let message = loadError(environment: base.merging(["PGWS_JWKS_URL": url]) { $1 })
            #expect(message?.hasPrefix("PGWS_JWKS_URL ") == true, "\(url): \(message ?? "loaded")")
            #expect(message?.contains(url) == false, "a URL may hold a password: never echoed")
        }
        #expect(
            loadError(environment: base.merging(["PGWS_JWKS_URL": "ftp://u:pw@x/k"]) { $1 })
                == "PGWS_JWKS_URL must be an http:// or https:// URL (the scheme is not http or https)")
    }

    @Test("jwks-ca-file without jwks-url is an error")
    func caFileAlone() {
        #expect(
            loadError(environment: required.merging(["PGWS_JWKS_CA_FILE": "/etc/ca.pem"]) { $1 })
                == "PGWS_JWKS_CA_FILE is set but jwks-url is not")
    }

    @Test("the bridge refuses a jwks-ca-file it cannot read or that holds no certificate, before it starts")
    func bridgeRefusesBadCAFile() throws {
        var configuration = Configuration(databaseURI: "postgres://unused", jwtSecret: nil)
        configuration.jwks = JWKSSettings(url: "https://idp.example/keys", caFile: "/nonexistent/ca.pem")
        #expect(throws: ConfigurationError.self) {
            _ = try Bridge(configuration: configuration, logger: Logger(label: "test"), eventLoopThreads: 1)
        }
        let notPEM = FileManager.default.temporaryDirectory.appendingPathComponent(
            "pgws-not-a-ca-\(UUID().uuidString).pem")
        try Data("not a certificate\n".utf8).write(to: notPEM)
        defer { try? FileManager.default.removeItem(at: notPEM) }
        configuration.jwks?.caFile = notPEM.path
        #expect(throws: ConfigurationError("jwks-ca-file: \(notPEM.path) holds no PEM certificate")) {
            _ = try Bridge(configuration: configuration, logger: Logger(label: "test"), eventLoopThreads: 1)
        }
        configuration.jwks = nil
        #expect(throws: ConfigurationError("jwt-secret or jwks-url is required")) {
            _ = try Bridge(configuration: configuration, logger: Logger(label: "test"), eventLoopThreads: 1)
        }
    }

    @Test("certificate-file and key-file turn TLS on together; the environment overrides the file")
    func tlsPair() throws {
        let config = try load(
            environment: required.merging([
                "PGWS_CERTIFICATE_FILE": "/certs/chain.pem", "PGWS_KEY_FILE": "/certs/key.pem",
            ]) { $1 })
        #expect(config.tls == TLSSettings(certificateFile: "/certs/chain.pem", keyFile: "/certs/key.pem"))
        let mixed = try load(
            "db-uri = \"x\"\njwt-secret = \"y\"\ncertificate-file = \"file.pem\"\nkey-file = \"file.key\"",
            environment: ["PGWS_KEY_FILE": "env.key", "PGWS_CERTIFICATE_FILE": ""])
        #expect(mixed.tls == TLSSettings(certificateFile: "file.pem", keyFile: "env.key"))
        // Paths are taken as given: the files are read when the server starts, not here.
        let spaced = try load(
            environment: required.merging(["PGWS_CERTIFICATE_FILE": "a b.pem", "PGWS_KEY_FILE": "k"]) { $1 })
        #expect(spaced.tls?.certificateFile == "a b.pem")
    }

    @Test("one of certificate-file and key-file without the other is an error naming both")
    func tlsHalfPair() throws {
        let both =
            "certificate-file (PGWS_CERTIFICATE_FILE) and key-file (PGWS_KEY_FILE) go together: set both for TLS or neither"
        #expect(
            loadError(environment: required.merging(["PGWS_CERTIFICATE_FILE": "/c.pem"]) { $1 })
                == "\(both); only PGWS_CERTIFICATE_FILE is set")
        #expect(
            loadError(environment: required.merging(["PGWS_KEY_FILE": "/k.pem"]) { $1 })
                == "\(both); only PGWS_KEY_FILE is set")
        #expect(
            loadError("db-uri = \"x\"\njwt-secret = \"y\"\n\nkey-file = \"/k.pem\"")
                == "\(both); only test.conf:4: key-file is set")
        // An empty variable does not count as set, so it cannot complete a pair.
        #expect(
            loadError(environment: required.merging(["PGWS_CERTIFICATE_FILE": "/c.pem", "PGWS_KEY_FILE": ""]) { $1 })
                == "\(both); only PGWS_CERTIFICATE_FILE is set")
    }

    @Test("an empty certificate-file or key-file in the file is refused naming where it came from")
    func tlsEmptyPath() {
        #expect(
            loadError("db-uri = \"x\"\njwt-secret = \"y\"\ncertificate-file = \" \"\nkey-file = \"k\"")
                == "test.conf:3: certificate-file is empty")
        #expect(
            loadError("db-uri = \"x\"\njwt-secret = \"y\"\ncertificate-file = \"c\"\nkey-file = \"\"")
                == "test.conf:4: key-file is empty")
    }
}

/// What users of postgres-websockets' older and current releases bring along.
@Suite("Configuration compatibility")
struct ConfigurationCompatibilityTests {
    @Test("db-pool is the old name of pool-size; both at once is an error naming both lines")
    func dbPoolAlias() throws {
        let base = "db-uri = \"x\"\njwt-secret = \"y\"\n"
        #expect(try load(base + "db-pool = 7").notifier.poolSize == 7)
        #expect(fileError(base + "pool-size = 3\ndb-pool = 7") == "test.conf:4: 'db-pool' is already set on line 3")
    }

    @Test("$(VAR) in a quoted value comes from the environment; $$ is a $; a missing variable is named")
    func interpolation() throws {
        let environment = ["DATABASE_URL": "postgres://db.example/app", "SECRET": "from-env"]
        let parsed = try ConfigurationFile(
            path: "old.conf",
            contents:
                "db-uri = \"$(DATABASE_URL)?sslmode=disable\"\njwt-secret = \"$(SECRET)\"\nmeta-channel = \"pay$$day\"",
            environment: environment)
        #expect(parsed.entries[.databaseURI]?.value == "postgres://db.example/app?sslmode=disable")
        #expect(parsed.entries[.jwtSecret]?.value == "from-env")
        #expect(parsed.entries[.metaChannel]?.value == "pay$day")
        #expect(
            try ConfigurationFile(path: "f", contents: "db-uri = \"cost $5\"").entries[.databaseURI]?.value == "cost $5"
        )
        do {
            _ = try ConfigurationFile(path: "old.conf", contents: "db-uri = \"$(NOPE)\"", environment: environment)
            Issue.record("a missing variable must be an error")
        } catch {
            #expect(error.message == "old.conf:1: 'db-uri' uses $(NOPE), which is not set in the environment")
        }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationFile(path: "f", contents: "db-uri = \"$(UNCLOSED\"", environment: environment)
        }
    }

    @Test("PGWS_RETRIES bounds the start-up attempts; unset means forever")
    func retries() throws {
        #expect(try load(environment: required).listener.startupAttempts == nil)
        #expect(try load(environment: required.merging(["PGWS_RETRIES": "5"]) { $1 }).listener.startupAttempts == 5)
        #expect(
            loadError(environment: required.merging(["PGWS_RETRIES": "0"]) { $1 })?.contains("PGWS_RETRIES") == true)
    }

    @Test("PGWS_CHECK_LISTENER_INTERVAL is accepted, with one notice")
    func checkListenerInterval() throws {
        let config = try load(environment: required.merging(["PGWS_CHECK_LISTENER_INTERVAL": "1000"]) { $1 })
        #expect(config.notices.count == 1)
        #expect(config.notices.first?.contains("PGWS_CHECK_LISTENER_INTERVAL") == true)
        #expect(try load(environment: required).notices.isEmpty)
    }

    @Test("listen-channel and publish-to")
    func listenChannel() throws {
        let config = try load(
            environment: required.merging(["PGWS_LISTEN_CHANNEL": "pgws", "PGWS_PUBLISH_TO": "listen-channel"]) { $1 })
        #expect(config.channels.listenChannel == "pgws")
        #expect(config.channels.publishTo == .listenChannel)
        #expect(
            loadError(environment: required.merging(["PGWS_PUBLISH_TO": "both"]) { $1 })
                == "PGWS_PUBLISH_TO must be channel or listen-channel, got 'both'")
    }
}
