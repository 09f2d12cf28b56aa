import BridgeTestSupport
import Foundation
import NIOCore
import NIOSSL
import PostgresWebSockets
import Testing

/// Native TLS: `wss://` and `https://` on the server's one port, certificate rotation on
/// SIGHUP, and the pairs refused at start and at reload. Every client verifies the server's
/// certificate (chain to the test root CA, name `localhost`), as a browser does.
@Suite struct TLSTests {
    /// What a key file holds that must never reach a log: its PEM armour and its base64 lines.
    private func keyMaterial(_ pair: TestCertificates.Pair) -> [String] {
        let lines = String(decoding: pair.keyPEM, as: UTF8.self).split(separator: "\n").map(String.init)
        return ["PRIVATE KEY"] + lines.filter { !$0.hasPrefix("-----") && $0.count >= 16 }
    }

    private func expectNoKeyMaterial(_ log: String, _ pairs: TestCertificates.Pair...) {
        for pair in pairs {
            for secret in keyMaterial(pair) {
                #expect(!log.contains(secret), "the log shows key material")
            }
        }
    }

    @Test func secureSocketCarriesNotificationsAndMessagesAndHealthAnswers() async throws {
        let certificates = try await TestCertificates.shared()
        let files = try TLSFiles(certificates.first)
        defer { files.remove() }
        let db = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
        let listener = try await TestDatabase(uri: TemporaryPostgres.sharedURI())
        try await TestServer.with({ $0.tls = files.settings }) { server in
            let channel = uniqueChannel()
            try await listener.listen(channel)
            let socket = try await server.connect(channel: channel, mode: "rw", tls: certificates.client)
            #expect(try await socket.peerCertificate()?.serialNumber == certificates.first.serial)

            // PostgreSQL -> socket: one small and one large payload (several TLS records), then a burst.
            try await db.notify(channel, "from SQL over TLS")
            #expect(try await socket.nextText() == "from SQL over TLS")
            let large = String(repeating: "x", count: 7999)
            try await db.notify(channel, large)
            #expect(try await socket.nextText() == large)
            try await db.query("SELECT pg_notify($1, 'burst-' || i) FROM generate_series(1, 200) AS i", [channel])
            for i in 1...200 {
                #expect(try await socket.nextText() == "burst-\(i)")
            }

            // Socket -> PostgreSQL: the envelope reaches a plain LISTEN (and the socket itself).
            _ = try await listener.notifications(count: 202)  // those of SQL
            try await socket.send(text: "from the socket over TLS")
            let sent = try await listener.nextNotification()
            #expect(sent.channel == channel)
            #expect(try JSONParser.parse(sent.payload)["payload"]?.stringValue == "from the socket over TLS")
            #expect(
                try JSONParser.parse(try await socket.nextText())["payload"]?.stringValue == "from the socket over TLS")

            let health = try await HTTPGet.fetch(port: server.port, path: "/health", tls: certificates.client)
            #expect(health.status == 200)
            #expect(try JSONParser.parse(health.body)["status"] == .string("ok"))

            // The close handshake, then TLS's own closing: the connection ends promptly.
            try await socket.close(code: 1000)
            #expect(try await socket.nextClose(timeout: 5).code == 1000)
            #expect(try await socket.next(timeout: 5) == .disconnected)
        }
    }

    @Test func plainHTTPOnTheTLSPortGetsNoHTTPAnswer() async throws {
        let certificates = try await TestCertificates.shared()
        let files = try TLSFiles(certificates.first)
        defer { files.remove() }
        // A handshake timeout far above the test's patience: the server closes because the TLS
        // handshake failed, not because the request took too long.
        try await TestServer.with({
            $0.tls = files.settings
            $0.limits.handshakeTimeout = .seconds(60)
        }) { server in
            let started = Date()
            let outcome = try await WebSocketClient.open(
                port: server.port, path: "/\(uniqueChannel())/\(TestTokens.mint(mode: "r"))")
            guard case .refused(let refusal) = outcome else {
                Issue.record("a plain ws:// socket was upgraded on the TLS port")
                return
            }
            #expect(refusal.status == 0, "the server answered plain HTTP: \(refusal)")
            #expect(refusal.body.hasPrefix("connection closed before a response"))
            let health = try await HTTPGet.fetch(port: server.port, path: "/health")
            #expect(health.status == 0)
            #expect(Date().timeIntervalSince(started) < patience(10))

            // Verification is on: a certificate for another name is refused by the client.
            let elsewhere = try WebSocketClient.TLS(trusting: certificates.rootPEM, serverHostname: "elsewhere.example")
            let mismatch = try await WebSocketClient.open(
                port: server.port, path: "/\(uniqueChannel())/\(TestTokens.mint(mode: "r"))", tls: elsewhere)
            guard case .refused(let refused) = mismatch else {
                Issue.record("a certificate for localhost was accepted for elsewhere.example")
                return
            }
            #expect(refused.status == 0)
            #expect(refused.body.contains("connection closed before a response:"), "\(refused.body)")
            // The port still serves TLS clients after all that.
            let socket = try await server.connect(channel: uniqueChannel(), mode: "r", tls: certificates.client)
            await socket.disconnect()
        }
    }

    @Test func sighupServesTheNewCertificateToNewConnectionsAndKeepsOpenSockets() async throws {
        let certificates = try await TestCertificates.shared()
        let files = try TLSFiles(certificates.first)
        defer { files.remove() }
        let uri = await TemporaryPostgres.sharedURI()
        let db = try TestDatabase(uri: uri)
        let listener = try TestDatabase(uri: uri)
        let environment = ["PGWS_DB_URI": uri, "PGWS_JWT_SECRET": TestTokens.secret].merging(files.environment) { $1 }
        try await ServerProcess.with(environment: environment) { server in
            #expect(server.log.contains("tls=on"))
            let channel = uniqueChannel()
            try await listener.listen(channel)
            let before = try await WebSocketClient.connect(
                port: server.port, path: "/\(channel)/\(TestTokens.mint(mode: "rw"))", tls: certificates.client)
            #expect(try await before.peerCertificate()?.serialNumber == certificates.first.serial)

            try files.write(certificateOf: certificates.second, keyOf: certificates.second)
            server.signal(SIGHUP)
            let reloaded = try await server.waitForLine(containing: "TLS certificate reloaded")
            #expect(reloaded.contains("certificate_serial=2002"), "\(reloaded)")
            #expect(reloaded.contains(files.certificateFile))

            let after = try await WebSocketClient.connect(
                port: server.port, path: "/\(channel)/\(TestTokens.mint(mode: "r"))", tls: certificates.client)
            #expect(try await after.peerCertificate()?.serialNumber == certificates.second.serial)
            // The socket opened before the reload still has its connection and its certificate.
            #expect(try await before.peerCertificate()?.serialNumber == certificates.first.serial)
            try await db.notify(channel, "after the rotation")
            #expect(try await before.nextText() == "after the rotation")
            #expect(try await after.nextText() == "after the rotation")
            try await before.send(text: "still writing")
            #expect(try await listener.nextNotification().payload == "after the rotation")
            #expect(
                try JSONParser.parse(try await listener.nextNotification().payload)["payload"]
                    == .string("still writing"))
            #expect(try JSONParser.parse(try await after.nextText())["payload"] == .string("still writing"))
            expectNoKeyMaterial(server.log, certificates.first, certificates.second)
            await before.disconnect()
            await after.disconnect()
        }
    }

    @Test func mismatchedPairIsRefusedAtStartNamingTheFiles() async throws {
        let certificates = try await TestCertificates.shared()
        let files = try TLSFiles(certificates.first)
        defer { files.remove() }
        try files.write(certificateOf: certificates.first, keyOf: certificates.second)
        let base = ["PGWS_DB_URI": "postgres://unused", "PGWS_JWT_SECRET": TestTokens.secret]
        let process = try await ServerProcess(
            environment: base.merging(files.environment) { $1 }, waitForListening: false)
        #expect(try await process.waitForExit(timeout: 30) == 1)
        let log = process.log
        #expect(log.split(separator: "\n").count == 1, "\(log)")
        #expect(log.contains("configuration error"))
        #expect(log.contains(files.keyFile) && log.contains(files.certificateFile), "\(log)")
        #expect(log.contains("is not the key of"), "\(log)")
        expectNoKeyMaterial(log, certificates.first, certificates.second)

        // A key file that holds no key (here: the certificate) is named as well.
        var swapped = files.environment
        swapped["PGWS_KEY_FILE"] = files.certificateFile
        let noKey = try await ServerProcess(environment: base.merging(swapped) { $1 }, waitForListening: false)
        #expect(try await noKey.waitForExit(timeout: 30) == 1)
        #expect(noKey.log.split(separator: "\n").count == 1, "\(noKey.log)")
        #expect(noKey.log.contains("key-file \(files.certificateFile) holds no PEM private key"), "\(noKey.log)")
    }

    @Test func mismatchedPairAtReloadIsLoggedAndTheCurrentOneKept() async throws {
        let certificates = try await TestCertificates.shared()
        let files = try TLSFiles(certificates.first)
        defer { files.remove() }
        let uri = await TemporaryPostgres.sharedURI()
        let environment = ["PGWS_DB_URI": uri, "PGWS_JWT_SECRET": TestTokens.secret].merging(files.environment) { $1 }
        try await ServerProcess.with(environment: environment) { server in
            // A rotation caught half done: the new certificate, the old key.
            try files.write(certificateOf: certificates.second, keyOf: certificates.first)
            server.signal(SIGHUP)
            let failed = try await server.waitForLine(containing: "TLS certificate reload failed")
            #expect(failed.contains(" error "), "logged at level error: \(failed)")
            #expect(failed.contains("is not the key of"), "\(failed)")
            #expect(failed.contains(files.keyFile) && failed.contains(files.certificateFile))
            expectNoKeyMaterial(server.log, certificates.first, certificates.second)

            let socket = try await WebSocketClient.connect(
                port: server.port, path: "/\(uniqueChannel())/\(TestTokens.mint(mode: "r"))", tls: certificates.client)
            #expect(try await socket.peerCertificate()?.serialNumber == certificates.first.serial)
            await socket.disconnect()

            // The rotation completed: the next SIGHUP takes it.
            try files.write(certificateOf: certificates.second, keyOf: certificates.second)
            server.signal(SIGHUP)
            try await server.waitForLine(containing: "TLS certificate reloaded")
            let rotated = try await WebSocketClient.connect(
                port: server.port, path: "/\(uniqueChannel())/\(TestTokens.mint(mode: "r"))", tls: certificates.client)
            #expect(try await rotated.peerCertificate()?.serialNumber == certificates.second.serial)
            await rotated.disconnect()
        }
    }

    @Test func certificateWithoutKeyIsAStartupError() async throws {
        let base = ["PGWS_DB_URI": "postgres://unused", "PGWS_JWT_SECRET": TestTokens.secret]
        for setting in ["PGWS_CERTIFICATE_FILE", "PGWS_KEY_FILE"] {
            let process = try await ServerProcess(
                environment: base.merging([setting: "/nonexistent/file.pem"]) { $1 }, waitForListening: false)
            #expect(try await process.waitForExit(timeout: 30) == 1)
            let log = process.log
            #expect(log.split(separator: "\n").count == 1, "\(log)")
            #expect(log.contains("certificate-file (PGWS_CERTIFICATE_FILE) and key-file (PGWS_KEY_FILE)"), "\(log)")
            #expect(log.contains("only \(setting) is set"), "\(log)")
        }
    }
}
