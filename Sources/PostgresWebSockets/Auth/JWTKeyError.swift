/// Why configured key material cannot be used to verify tokens.
///
/// Reasons name the member at fault, never its value: key material ends up in logs otherwise.
public struct JWTKeyError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    /// The key is not broken but meant for something else (encryption, a curve or key type
    /// JWS verification here does not use): a JWKS leaves it out instead of failing.
    let isForSomethingElse: Bool

    init(_ reason: String, isForSomethingElse: Bool = false) {
        self.reason = reason
        self.isForSomethingElse = isForSomethingElse
    }

    public var description: String { reason }
}
