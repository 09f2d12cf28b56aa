import Foundation

/// Channel names unique to one test, so tests running in parallel on one database never
/// see each other's notifications.
public func uniqueChannel(_ prefix: String = "t") -> String {
    "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
}

/// Set by `make test-tsan`: ThreadSanitizer's shadow memory inflates RSS, so memory bounds
/// are checked by the plain `make test` run only.
public var runsUnderSanitizer: Bool {
    ProcessInfo.processInfo.environment["PGWS_TEST_SANITIZER"] != nil
}
