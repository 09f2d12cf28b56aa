import Foundation
import NIOSSL
import PostgresWebSockets

/// Throwaway certificates for the TLS tests: a root CA, an intermediate CA, and two server
/// certificates for `localhost` under the intermediate (serials 1001 and 2002), plus one for
/// another host name (`elsewhere.pgws.test`, serial 3003), each with its own P-256 key. Made once per test process, kept in memory only; a test writes
/// the files its server reads with `TLSFiles`.
///
/// Made with the `openssl` command (Debian's `openssl` package, which `scripts/install-deps`
/// installs) rather than swift-certificates: swift-nio-ssl does not build swift-certificates
/// for its library, and swift-certificates would bring swift-crypto with a second vendored
/// BoringSSL into the test build, minutes of compiling on a small CI machine for what
/// five short commands do. The files are also exactly what an operator's `openssl` makes.
public struct TestCertificates: Sendable {
    /// One server certificate: the PEM chain (leaf, then the intermediate), its key, its serial.
    public struct Pair: Sendable {
        public let chainPEM: [UInt8]
        public let keyPEM: [UInt8]
        public let serial: [UInt8]
    }

    /// The root CA alone: what clients trust.
    public let rootPEM: [UInt8]
    public let first: Pair
    public let second: Pair
    /// A certificate from the same CA for `elsewhere.pgws.test`, not `localhost`: a client that
    /// checks host names refuses it on `localhost`.
    public let elsewhere: Pair
    /// A client context that trusts the root and verifies that the server is `localhost`.
    public let client: WebSocketClient.TLS

    private static let made = Task { try await make() }

    /// The process's certificates, made on first use.
    public static func shared() async throws -> TestCertificates {
        try await made.value
    }

    private static func make() async throws -> TestCertificates {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pgws-certs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
        func file(_ name: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path(name)))) }

        try Data(
            """
            basicConstraints = critical, CA:TRUE, pathlen:0
            keyUsage = critical, keyCertSign, cRLSign
            subjectKeyIdentifier = hash
            authorityKeyIdentifier = keyid

            """.utf8
        ).write(to: URL(fileURLWithPath: path("intermediate.ext")))
        for (name, dnsName) in [("first", "localhost"), ("second", "localhost"), ("elsewhere", "elsewhere.pgws.test")] {
            try Data(
                """
                basicConstraints = critical, CA:FALSE
                keyUsage = critical, digitalSignature
                extendedKeyUsage = serverAuth
                subjectAltName = DNS:\(dnsName)
                subjectKeyIdentifier = hash
                authorityKeyIdentifier = keyid

                """.utf8
            ).write(to: URL(fileURLWithPath: path("\(name).ext")))
        }

        let newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        try await openssl(
            ["req", "-x509"] + newKey + [
                "-keyout", path("root.key"), "-out", path("root.pem"), "-subj", "/CN=pgws test root CA",
                "-days", "3", "-set_serial", "1",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ])
        try await openssl(
            ["req", "-new"] + newKey + [
                "-keyout", path("intermediate.key"), "-out", path("intermediate.csr"),
                "-subj", "/CN=pgws test intermediate CA",
            ])
        try await openssl([
            "x509", "-req", "-in", path("intermediate.csr"), "-CA", path("root.pem"), "-CAkey", path("root.key"),
            "-set_serial", "2", "-days", "3", "-extfile", path("intermediate.ext"), "-out", path("intermediate.pem"),
        ])
        var pairs: [Pair] = []
        for (name, serial) in [
            ("first", [UInt8]([0x10, 0x01])), ("second", [0x20, 0x02]), ("elsewhere", [0x30, 0x03]),
        ] {
            try await openssl(
                ["req", "-new"] + newKey + [
                    "-keyout", path("\(name).key"), "-out", path("\(name).csr"), "-subj",
                    "/CN=\(name == "elsewhere" ? "elsewhere.pgws.test" : "localhost")/O=pgws \(name)",
                ])
            try await openssl([
                "x509", "-req", "-in", path("\(name).csr"), "-CA", path("intermediate.pem"),
                "-CAkey", path("intermediate.key"), "-set_serial",
                "0x" + serial.map { String(format: "%02x", $0) }.joined(),
                "-days", "3",
                "-extfile", path("\(name).ext"), "-out", path("\(name).pem"),
            ])
            pairs.append(
                Pair(
                    chainPEM: try file("\(name).pem") + file("intermediate.pem"), keyPEM: try file("\(name).key"),
                    serial: serial))
        }
        let root = try file("root.pem")
        return TestCertificates(
            rootPEM: root, first: pairs[0], second: pairs[1], elsewhere: pairs[2],
            client: try WebSocketClient.TLS(trusting: root))
    }

    private static func openssl(_ arguments: [String]) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let errors = Pipe()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            process.terminationHandler = { _ in continuation.resume() }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
        guard process.terminationStatus == 0 else {
            let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw OpenSSLFailure(arguments: arguments, message: message)
        }
    }

    struct OpenSSLFailure: Error, CustomStringConvertible {
        let arguments: [String]
        let message: String
        var description: String { "openssl \(arguments.prefix(2).joined(separator: " ")) failed: \(message)" }
    }
}

/// The certificate and key files of one server, in a folder of their own, which the test
/// rewrites to rotate them and removes at its end.
public struct TLSFiles: Sendable {
    public let directory: String
    public let certificateFile: String
    public let keyFile: String

    public init(_ pair: TestCertificates.Pair) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("pgws-tls-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        certificateFile = directory + "/fullchain.pem"
        keyFile = directory + "/key.pem"
        try write(certificateOf: pair, keyOf: pair)
    }

    /// Replaces both files (each atomically), possibly with a certificate and a key that do not
    /// belong together.
    public func write(certificateOf certificate: TestCertificates.Pair, keyOf key: TestCertificates.Pair) throws {
        try Data(certificate.chainPEM).write(to: URL(fileURLWithPath: certificateFile), options: .atomic)
        try Data(key.keyPEM).write(to: URL(fileURLWithPath: keyFile), options: .atomic)
    }

    /// The settings of an in-process server that serves these files.
    public var settings: TLSSettings {
        TLSSettings(certificateFile: certificateFile, keyFile: keyFile)
    }

    /// The settings of the executable that serves these files.
    public var environment: [String: String] {
        ["PGWS_CERTIFICATE_FILE": certificateFile, "PGWS_KEY_FILE": keyFile]
    }

    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}
