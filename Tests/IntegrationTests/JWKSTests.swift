import BridgeTestSupport
import Foundation
import Logging
import PostgresWebSockets
import Testing

/// Signing keys fetched from a JWKS URL: a real HTTP server on loopback (`JWKSTestServer`)
/// serving a JWK Set that the tests rotate, stop and start again, a real server under test and
/// real WebSocket handshakes. The JWKS timings are shortened where a test would otherwise wait
/// for minutes; the unknown-kid bound is tested with its real 30 s.
@Suite struct JWKSTests {
    typealias Keys = JWKSTestKeys

    static func response(_ body: String, maxAge: Int? = 3600) -> JWKSTestServer.Response {
        .init(body: body, headers: maxAge.map { [("cache-control", "public, max-age=\($0)")] } ?? [])
    }

    /// Runs `body` with a started JWKS server and always stops it.
    func withJWKS<T>(
        _ response: JWKSTestServer.Response, _ body: (JWKSTestServer) async throws -> T
    ) async throws -> T {
        let jwks = try await JWKSTestServer.start(serving: response)
        do {
            let result = try await body(jwks)
            await jwks.stop()
            return result
        } catch {
            await jwks.stop()
            throw error
        }
    }

    /// The status of a handshake with `token` (101 when upgraded; the socket is closed) and the
    /// refusal's body.
    func answer(_ server: TestServer, _ token: String) async throws -> (status: Int, body: String) {
        switch try await server.open("/\(token)") {
        case .upgraded(let client):
            await client.disconnect()
            return (101, "")
        case .refused(let refusal):
            return (refusal.status, refusal.body)
        }
    }

    func waitForLoad(_ server: TestServer, _ jwks: JWKSTestServer, keys: Int) async throws {
        try await server.log.waitForRecord(with: [.jwksURL: jwks.url, .keys: "\(keys)"])
    }

    /// No line the server logged holds a token or key material.
    func expectNoSecretsLogged(_ server: TestServer) {
        let printed = server.log.records.map(\.description).joined(separator: "\n")
        for secret in [Keys.rsa1N, Keys.rsa2N, Keys.tokenRS256, Keys.tokenRS256Key2, Keys.tokenUnknownKid] {
            #expect(!printed.contains(secret.prefix(40)))
        }
    }

    @Test func rotatedKeyIsRefusedFirstThenAcceptedAfterTheRefreshItTriggered() async throws {
        try await withJWKS(Self.response(Keys.jwks(Keys.rsa1))) { jwks in
            try await TestServer.with({
                $0.jwtSecret = nil  // a raw secret would stand in for unknown kids, with its own reason
                $0.jwks = JWKSSettings(url: jwks.url)
                $0.jwks?.unknownKeyInterval = .seconds(1)
            }) { server in
                try await waitForLoad(server, jwks, keys: 1)
                #expect(try await answer(server, Keys.tokenRS256).status == 101)
                #expect(jwks.requests == 1)

                jwks.serve(Self.response(Keys.jwks(Keys.rsa1, Keys.rsa2)))
                let first = try await answer(server, Keys.tokenRS256Key2)
                #expect(first.status == 401)
                #expect(first.body.contains("unknown key"))
                // max-age is an hour: only the unknown kid can have asked for this fetch.
                try await waitUntil(timeout: 10, "the refresh the unknown kid triggered") { jwks.requests == 2 }
                try await waitForLoad(server, jwks, keys: 2)
                #expect(try await answer(server, Keys.tokenRS256Key2).status == 101)
                #expect(try await answer(server, Keys.tokenRS256).status == 101, "the old key is still served")
                #expect(jwks.requests == 2)
                expectNoSecretsLogged(server)
            }
        }
    }

    @Test func userInformationIsSentAsBasicCredentialsAndNeverLogged() async throws {
        try await withJWKS(Self.response(Keys.jwks(Keys.rsa1))) { jwks in
            let url = jwks.url.replacingOccurrences(of: "://", with: "://reader:s3cr%40t@")
            try await TestServer.with({
                $0.jwtSecret = nil
                $0.jwks = JWKSSettings(url: url)
            }) { server in
                try await waitForLoad(server, jwks, keys: 1)
                #expect(jwks.authorizations == ["Basic " + Data("reader:s3cr@t".utf8).base64EncodedString()])
                let printed = server.log.records.map(\.description).joined(separator: "\n")
                #expect(!printed.contains("reader"))
                #expect(!printed.contains("s3cr"))
            }
        }
    }

    @Test func unknownKidsCannotMakeTheServerHammerTheURL() async throws {
        try await withJWKS(Self.response(Keys.jwks(Keys.rsa1))) { jwks in
            try await TestServer.with({
                $0.jwtSecret = nil
                $0.jwks = JWKSSettings(url: jwks.url)  // the real 30 s bound
            }) { server in
                try await waitForLoad(server, jwks, keys: 1)
                // One, unless a loaded machine made the first attempt fail and a retry load the keys.
                let loadedAfter = jwks.requests
                let loadedAt = Date()
                for _ in 0..<20 {
                    let refused = try await answer(server, Keys.tokenUnknownKid)
                    #expect(refused.status == 401)
                    #expect(refused.body.contains("unknown key"))
                }
                try await Task.sleep(for: .milliseconds(500))
                // A loaded machine can take the 30 s itself, after which a fetch is due.
                #expect(
                    jwks.requests == loadedAfter || Date().timeIntervalSince(loadedAt) >= 30,
                    "no fetch sooner than 30 s after the last one started")
            }
        }
    }

    @Test func unreachableURLKeepsTheLastKeysAndIsLoggedOnceWhenFailuresStartAndEnd() async throws {
        try await withJWKS(Self.response(Keys.jwks(Keys.rsa1), maxAge: 1)) { jwks in
            try await TestServer.with({
                $0.jwks = JWKSSettings(url: jwks.url)
                $0.jwks?.minimumRefresh = .milliseconds(200)
                $0.jwks?.retryInitial = .milliseconds(50)
                $0.jwks?.retryMaximum = .milliseconds(200)
            }) { server in
                try await waitForLoad(server, jwks, keys: 1)
                await jwks.stop()
                let warning = try await server.log.waitForRecord(with: [.jwksURL: jwks.url, .failures: "1"])
                #expect(warning.level == .warning)
                #expect(warning.message == "JWKS fetch failed, keeping the last keys")
                // Retries at 50, 100, 200, 200, ... ms meanwhile.
                try await Task.sleep(for: .milliseconds(1200))
                #expect(try await answer(server, Keys.tokenRS256).status == 101, "the last good keys still verify")

                try await jwks.start()  // the same port
                try await waitUntil(timeout: 10, "the notice that fetching works again") {
                    server.log.records.contains { $0.message == "JWKS fetched again" }
                }
                let records = server.log.records.filter { $0[.jwksURL] == jwks.url }
                let warnings = records.filter { $0.level == .warning }
                let notices = records.filter { $0.message == "JWKS fetched again" }
                #expect(warnings.count == 1, "\(warnings)")
                #expect(notices.count == 1)
                #expect(notices.first?.level == .notice)
                let failures = notices.first?[.failures].flatMap { Int($0) } ?? 0
                #expect(failures >= 3, "several retries failed, and were not logged one by one")
                #expect(try await answer(server, Keys.tokenRS256).status == 101)
                expectNoSecretsLogged(server)
            }
        }
    }

    @Test func failedFetchesOfEveryKindKeepTheKeysAndNameTheirCause() async throws {
        let good = Self.response(Keys.jwks(Keys.rsa1), maxAge: 1)
        try await withJWKS(good) { jwks in
            try await TestServer.with({
                $0.jwtSecret = nil
                $0.jwks = JWKSSettings(url: jwks.url)
                $0.jwks?.minimumRefresh = .milliseconds(200)
                $0.jwks?.retryInitial = .milliseconds(50)
                $0.jwks?.retryMaximum = .milliseconds(100)
            }) { server in
                try await waitForLoad(server, jwks, keys: 1)
                let oversized = Keys.jwks(Keys.rsa1) + String(repeating: " ", count: 1 << 20)
                let failures: [(JWKSTestServer.Response, String)] = [
                    (.init(status: 500, body: "oops"), "HTTP status 500"),
                    (.init(status: 302, body: "", headers: [("location", "http://127.0.0.1:9/")]), "HTTP status 302"),
                    (.init(body: "<html>not json</html>"), "not a usable JWK Set: JWKS is not valid JSON"),
                    (.init(body: #"{"keys":[]}"#), "not a usable JWK Set: JWKS has no key for verifying signatures"),
                    (.init(body: oversized), "response longer than 1048576 bytes"),
                ]
                for (response, cause) in failures {
                    jwks.serve(response)
                    let warning = try await server.log.waitForRecord(with: [.jwksURL: jwks.url, .failures: "1"])
                    #expect(warning.level == .warning)
                    #expect(warning[.error]?.hasPrefix(cause) == true, "\(warning)")
                    if cause.hasPrefix("HTTP status") {
                        #expect(warning[.httpStatus] == String(cause.suffix(3)))
                    }
                    #expect(try await answer(server, Keys.tokenRS256).status == 101, "the last good keys stay")
                    jwks.serve(good)
                    let notice = try await server.log.waitForRecord(with: [.jwksURL: jwks.url, .keys: "1"])
                    #expect(notice.message == "JWKS fetched again")
                }
                expectNoSecretsLogged(server)
            }
        }
    }

    @Test func onlyJWKSURLUnreachableAtStartAnswers503UntilItComesUp() async throws {
        // Started and stopped: a port nothing listens on, that the JWKS server takes again later.
        let jwks = try await JWKSTestServer.start(serving: Self.response(Keys.jwks(Keys.rsa1)))
        await jwks.stop()
        do {
            try await TestServer.with({
                $0.jwtSecret = nil
                $0.jwks = JWKSSettings(url: jwks.url)
                $0.jwks?.retryInitial = .milliseconds(100)
                $0.jwks?.retryMaximum = .milliseconds(300)
            }) { server in
                let waiting = try await answer(server, Keys.tokenRS256)
                #expect(waiting.status == 503)
                #expect(waiting.body.contains("signing keys not loaded yet"))
                #expect(try await answer(server, TestTokens.mint(mode: "r", channel: "a")).status == 503)
                #expect(try await answer(server, "not-a-token").status == 401, "a malformed token is still invalid")
                let warning = try await server.log.waitForRecord(with: [.jwksURL: jwks.url, .failures: "1"])
                #expect(warning.message == "JWKS fetch failed, no keys from it yet")

                try await jwks.start()
                try await waitUntil(timeout: 10, "the first good fetch", every: 0.05) {
                    try await answer(server, Keys.tokenRS256).status == 101
                }
                #expect(try await answer(server, Keys.tokenRS256Key2).status == 401, "now an unknown kid is invalid")
                #expect(server.log.records.filter { $0.level == .warning && $0[.jwksURL] == jwks.url }.count == 1)
                expectNoSecretsLogged(server)
            }
            await jwks.stop()
        } catch {
            await jwks.stop()
            throw error
        }
    }

    @Test func jwtSecretTokensWorkWhileTheURLHasNotAnsweredAndBothKeySetsAfter() async throws {
        let jwks = try await JWKSTestServer.start(serving: Self.response(Keys.jwks(Keys.rsa1)))
        await jwks.stop()
        do {
            try await TestServer.with({
                $0.jwks = JWKSSettings(url: jwks.url)
                $0.jwks?.retryInitial = .milliseconds(100)
                $0.jwks?.retryMaximum = .milliseconds(200)
            }) { server in
                let hmacToken = TestTokens.mint(mode: "r", channel: "a")
                #expect(try await answer(server, hmacToken).status == 101, "the jwt-secret verifies its tokens")
                #expect(try await answer(server, Keys.tokenRS256).status == 503, "its key may come from the URL")
                try await jwks.start()
                try await waitForLoad(server, jwks, keys: 1)
                #expect(try await answer(server, Keys.tokenRS256).status == 101)
                #expect(try await answer(server, hmacToken).status == 101, "the secret's keys stay")
            }
            await jwks.stop()
        } catch {
            await jwks.stop()
            throw error
        }
    }

    @Test func maxAgeFromCacheControlDrivesTheRefresh() async throws {
        try await withJWKS(Self.response(Keys.jwks(Keys.rsa1), maxAge: 1)) { jwks in
            try await TestServer.with({
                $0.jwks = JWKSSettings(url: jwks.url)
                $0.jwks?.minimumRefresh = .milliseconds(500)  // the floor is 30 s outside tests
                $0.jwks?.unknownKeyInterval = .seconds(3600)  // no unknown kid can ask for a fetch
            }) { server in
                try await waitForLoad(server, jwks, keys: 1)
                jwks.serve(Self.response(Keys.jwks(Keys.rsa2), maxAge: 3600))
                try await waitUntil(timeout: 10, "the fetch max-age=1 asked for") { jwks.requests == 2 }
                try await server.log.waitForRecord(with: [.jwksURL: jwks.url, .nextFetchSeconds: "3600.00"])
                #expect(try await answer(server, Keys.tokenRS256Key2).status == 101, "rotated in without a refusal")
                let removed = try await answer(server, Keys.tokenRS256)
                #expect(removed.status == 401, "a key the URL no longer serves is gone")
                try await Task.sleep(for: .seconds(2))
                #expect(jwks.requests == 2, "max-age=3600: no fetch for an hour")
            }
        }
    }

    // MARK: - https

    /// Runs `body` with a started https JWKS server presenting `pair`'s certificate, and the
    /// test CA's root in a file for `jwks-ca-file`; always stops and removes them.
    func withHTTPSJWKS<T>(
        _ response: JWKSTestServer.Response, certificate pair: KeyPath<TestCertificates, TestCertificates.Pair>,
        _ body: (JWKSTestServer, _ caFile: String) async throws -> T
    ) async throws -> T {
        let certificates = try await TestCertificates.shared()
        let caFile = FileManager.default.temporaryDirectory.appendingPathComponent(
            "pgws-jwks-ca-\(UUID().uuidString).pem")
        try Data(certificates.rootPEM).write(to: caFile)
        defer { try? FileManager.default.removeItem(at: caFile) }
        let jwks = try await JWKSTestServer.startTLS(serving: response, certificate: certificates[keyPath: pair])
        do {
            let result = try await body(jwks, caFile.path)
            await jwks.stop()
            return result
        } catch {
            await jwks.stop()
            throw error
        }
    }

    @Test func httpsWithAPrivateCAFromJWKSCAFileVerifiesAndRotates() async throws {
        try await withHTTPSJWKS(Self.response(Keys.jwks(Keys.rsa1), maxAge: 1), certificate: \.first) { jwks, caFile in
            #expect(jwks.url.hasPrefix("https://localhost:"))
            try await TestServer.with({
                $0.jwtSecret = nil
                $0.jwks = JWKSSettings(url: jwks.url, caFile: caFile)
                $0.jwks?.minimumRefresh = .milliseconds(500)
                $0.jwks?.unknownKeyInterval = .seconds(3600)
            }) { server in
                try await waitForLoad(server, jwks, keys: 1)
                #expect(try await answer(server, Keys.tokenRS256).status == 101)
                jwks.serve(Self.response(Keys.jwks(Keys.rsa2), maxAge: 3600))
                try await waitUntil(timeout: 10, "the fetch max-age=1 asked for") { jwks.requests == 2 }
                let changed = try await server.log.waitForRecord(
                    with: [.jwksURL: jwks.url, .nextFetchSeconds: "3600.00"])
                #expect(changed.message == "JWKS keys changed")
                #expect(try await answer(server, Keys.tokenRS256Key2).status == 101, "rotated in over https")
                #expect(try await answer(server, Keys.tokenRS256).status == 401)
                // Happy eyeballs may also open a connection it then drops (localhost is ::1 and
                // 127.0.0.1), when the first attempt is slow on a loaded machine.
                #expect(jwks.connectionsAccepted >= jwks.requests, "a connection per fetch, none reused")
                #expect(!server.log.records.contains { $0.level >= .warning && $0[.jwksURL] == jwks.url })
                expectNoSecretsLogged(server)
            }
        }
    }

    @Test func httpsWithoutTheCAFileFailsVerificationOnceInTheLogAndTheServerKeepsServing() async throws {
        try await withHTTPSJWKS(Self.response(Keys.jwks(Keys.rsa1)), certificate: \.first) { jwks, _ in
            try await TestServer.with({
                $0.jwks = JWKSSettings(url: jwks.url)  // the system's trust store only
                $0.jwks?.retryInitial = .milliseconds(50)
                $0.jwks?.retryMaximum = .milliseconds(100)
            }) { server in
                let warning = try await server.log.waitForRecord(with: [.jwksURL: jwks.url, .failures: "1"])
                #expect(warning.message == "JWKS fetch failed, no keys from it yet")
                #expect(warning[.error]?.hasPrefix("TLS handshake failed") == true, "\(warning)")
                #expect(warning[.error]?.contains("certificate verify failed") == true, "\(warning)")
                try await waitUntil(timeout: 10, "several retries") { jwks.connectionsAccepted >= 4 }
                #expect(jwks.requests == 0, "no request goes over a connection that failed verification")
                let hmacToken = TestTokens.mint(mode: "r", channel: "a")
                #expect(try await answer(server, hmacToken).status == 101, "the jwt-secret's tokens still work")
                #expect(try await answer(server, Keys.tokenRS256).status == 503)
                let warnings = server.log.records.filter { $0.level >= .warning && $0[.jwksURL] == jwks.url }
                #expect(warnings.count == 1, "\(warnings)")
            }
        }
    }

    @Test func httpsCertificateForAnotherHostNameIsRefused() async throws {
        try await withHTTPSJWKS(Self.response(Keys.jwks(Keys.rsa1)), certificate: \.elsewhere) { jwks, caFile in
            try await TestServer.with({
                $0.jwks = JWKSSettings(url: jwks.url, caFile: caFile)  // a trusted CA, the wrong name
                $0.jwks?.retryInitial = .milliseconds(50)
                $0.jwks?.retryMaximum = .milliseconds(100)
            }) { server in
                let warning = try await server.log.waitForRecord(with: [.jwksURL: jwks.url, .failures: "1"])
                #expect(warning.message == "JWKS fetch failed, no keys from it yet")
                #expect(
                    warning[.error] == "TLS handshake failed: the certificate is not for this host", "\(warning)")
                #expect(jwks.requests == 0)
                #expect(try await answer(server, Keys.tokenRS256).status == 503)
            }
        }
    }

    @Test func audienceIsRequiredWhenSet() async throws {
        try await TestServer.with({ $0.jwtAudience = "pgws-test" }) { server async throws in
            func token(_ aud: JSONValue?) -> String {
                TestTokens.mint(mode: "r", channel: uniqueChannel(), extra: aud.map { [("aud", $0)] } ?? [])
            }
            #expect(try await answer(server, token(.string("pgws-test"))).status == 101)
            #expect(try await answer(server, token(.array([.string("other"), .string("pgws-test")]))).status == 101)
            let wrong = try await answer(server, token(.string("other")))
            #expect(wrong.status == 401)
            #expect(wrong.body.contains("JWT audience not accepted"))
            #expect(
                try await answer(server, token(nil)).status == 401, "a token without aud is for no one in particular")
        }
    }
}
