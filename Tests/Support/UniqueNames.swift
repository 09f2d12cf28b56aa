import Foundation

/// Channel names unique to one test, so tests running in parallel on one database never
/// see each other's notifications.
public func uniqueChannel(_ prefix: String = "t") -> String {
    "\(prefix)-\(UUID().uuidString.prefix(8).lowercased())"
}

/// Set by `make test-tsan`: ThreadSanitizer's shadow memory inflates RSS, so memory bounds
/// are checked by the plain `make test` run only.
public let runsUnderSanitizer = ProcessInfo.processInfo.environment["PGWS_TEST_SANITIZER"] != nil

/// How long a test waits for an event before it calls it lost. ThreadSanitizer slows the
/// test process several times over while the whole suite runs on two cores, so the waits
/// stretch with it; none of them is a timing target, only a guard against hanging forever.
public func patience(_ seconds: Double) -> Double {
    runsUnderSanitizer ? seconds * 3 : seconds
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
