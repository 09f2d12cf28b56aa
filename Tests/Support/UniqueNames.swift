import Foundation

/// Channel names unique to one test, so tests running in parallel on one database never
/// see each other's notifications.
public func uniqueChannel(_ prefix: String = "t") -> String {
    "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
}
