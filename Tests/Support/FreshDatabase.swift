import Foundation

extension TemporaryPostgres {
    /// A new, empty database in the shared cluster (for tests that need one without the
    /// `pgws` schema, say), and its URI. It lives as long as the cluster.
    public static func freshDatabase() async throws -> String {
        let shared = await sharedURI()
        let name = uniqueChannel("db").lowercased()
        let admin = try TestDatabase(uri: shared)
        _ = try await admin.query("CREATE DATABASE \"\(name)\"")
        guard var components = URLComponents(string: shared) else {
            throw TestDatabase.Error(description: "cannot parse the shared database URI")
        }
        components.path = "/\(name)"
        guard let uri = components.string else {
            throw TestDatabase.Error(description: "cannot build a URI for database \(name)")
        }
        return uri
    }

    /// Whether `uri` names a database of the shared cluster (its own or a fresh one).
    public static func isInSharedCluster(_ uri: String) async -> Bool {
        let shared = await sharedURI()
        func cluster(_ uri: String) -> URLComponents? {
            var components = URLComponents(string: uri)
            components?.path = ""
            return components
        }
        return cluster(uri) != nil && cluster(uri) == cluster(shared)
    }
}
