import BridgeTestSupport
import Foundation
import NIOCore
import PostgresWebSockets
import Testing

/// Channel names are attacker-controlled (URL and token). PostgreSQL's own statement log
/// shows that the server never sends anything but LISTEN/UNLISTEN of a quoted identifier
/// and its parameterized NOTIFY batch.
@Suite struct InjectionTests {
    static let hostileNames = [
        #"x"; DROP TABLE canary; --"#, "y'; DROP TABLE canary; --", #"back\slash\"quote"#,
        "semi;colon;", "ünïcödé 🚀 ; \"", #"""double""quotes"""#, "$1 $$dollar$$", "/* comment */",
    ]

    @Test func onlyQuotedListenAndParameterizedNotifyReachPostgres() async throws {
        let cluster = try await TemporaryPostgres.start(settings: ["log_statement=all", "log_line_prefix='%a|'"])
        defer { cluster.stop() }
        let admin = try TestDatabase(uri: cluster.uri)
        try await admin.query("CREATE TABLE canary (id int)")
        let audit = #"audit"; DROP TABLE canary; --"#
        try await TestServer.with(
            databaseURI: cluster.uri,
            {
                $0.channels.auditChannel = audit; $0.channels.metaChannel = "meta'; DROP TABLE canary;--"
                $0.limits.maxLagDuration = .milliseconds(200)  // UNLISTEN soon after the last socket
            }
        ) { server in
            let receiver = try TestDatabase(uri: cluster.uri)
            for name in Self.hostileNames { try await receiver.listen(name) }
            for name in Self.hostileNames {
                let client = try await server.connect(channel: name, mode: "rw")
                try await admin.notify(name, "sql → \(name)")
                #expect(try await client.nextText() == "sql → \(name)")
                try await client.send(text: "socket → \(name)")
                let envelope = try JSONParser.parse(try await client.nextText())
                #expect(envelope["channel"] == .string(name))
                await client.disconnect()
            }
            let received = try await receiver.notifications(count: Self.hostileNames.count * 2)
            #expect(Set(received.map(\.channel)) == Set(Self.hostileNames))
            try await waitUntil(timeout: 10, "every UNLISTEN") { try await server.socketChannelsListened().isEmpty }
            let activity = try await admin.query(
                "SELECT query FROM pg_stat_activity WHERE application_name LIKE 'postgres-websockets%'")
            for row in activity {
                #expect(Self.isAllowed(row[0] ?? ""), "pg_stat_activity: \(row[0] ?? "")")
            }
        }
        #expect(try await admin.query("SELECT count(*) FROM pg_tables WHERE tablename = 'canary'").first?.first == "1")

        var checked = 0
        for line in cluster.serverLog.split(separator: "\n") where line.hasPrefix("postgres-websockets") {
            guard let range = line.range(of: "statement: ") ?? line.range(of: "execute <unnamed>: ") else { continue }
            let statement = String(line[range.upperBound...])
            #expect(Self.isAllowed(statement), "\(line)")
            checked += 1
        }
        #expect(checked >= Self.hostileNames.count * 2, "statements from the bridge in the log: \(checked)")
    }

    static let notifyBatch = "SELECT count(pg_notify(c, p)) FROM unnest($1::text[], $2::text[]) AS m(c, p)"

    /// What the listener asks on every connection: whether there are revocations to read.
    static let revocationTable = "SELECT to_regclass('pgws.revocations') IS NOT NULL"

    /// A statement the bridge may send: `(UN)LISTEN "ident";...`, the NOTIFY batch, the
    /// liveness probe (empty), the introspection query or the revocation table's check.
    static func isAllowed(_ statement: String) -> Bool {
        if statement.isEmpty || statement == notifyBatch || statement == "SELECT pg_listening_channels()"
            || statement == revocationTable
        {
            return true
        }
        var rest = Substring(statement)
        while !rest.isEmpty {
            if rest.hasPrefix("LISTEN \"") {
                rest = rest.dropFirst("LISTEN ".count)
            } else if rest.hasPrefix("UNLISTEN \"") {
                rest = rest.dropFirst("UNLISTEN ".count)
            } else {
                return false
            }
            // A quoted identifier: "..." with "" standing for one quote.
            rest = rest.dropFirst()
            while true {
                guard let quote = rest.firstIndex(of: "\"") else { return false }
                rest = rest[rest.index(after: quote)...]
                if rest.hasPrefix("\"") { rest = rest.dropFirst(); continue }
                break
            }
            guard rest.hasPrefix(";") else { return false }
            rest = rest.dropFirst()
        }
        return true
    }
}
