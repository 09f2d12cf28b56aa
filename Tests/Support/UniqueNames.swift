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

/// Runs one step of a test; a failure names the step.
public func step<T>(_ name: String, _ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch {
        throw StepFailure(step: name, error: error)
    }
}

public struct StepFailure: Error, CustomStringConvertible {
    public let step: String
    public let error: any Error
    public var description: String { "\(step): \(error)" }
}
