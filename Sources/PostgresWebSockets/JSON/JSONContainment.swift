/// PostgreSQL's `jsonb @>` in Swift: revocation filters are written in SQL and must match the
/// claims of open sockets as `claims @> filter` would in the database.
extension JSONValue {
    /// Whether `self @> other`: every member of an object filter is in the object, with a
    /// value that contains the filter's; every element of an array filter is contained by some
    /// element of the array; scalars are equal (numbers by value, `1.0` equals `1`). As in
    /// PostgreSQL, a top-level array also contains a scalar it has as an element.
    public func contains(_ other: JSONValue) -> Bool {
        if case .array(let elements) = self, other.isScalar {
            return elements.contains { $0.isScalar && $0.containsNested(other) }
        }
        return containsNested(other)
    }

    private func containsNested(_ other: JSONValue) -> Bool {
        switch (self, other) {
        case (.object(let members), .object(let wanted)):
            return wanted.allSatisfy { want in
                members.first { $0.key == want.key }.map { $0.value.containsNested(want.value) } ?? false
            }
        case (.array(let elements), .array(let wanted)):
            return wanted.allSatisfy { want in elements.contains { $0.containsNested(want) } }
        case (.number(let a), .number(let b)):
            return a == b || (Double(a).map { $0 == Double(b) } ?? false)
        default:
            return self == other && isScalar
        }
    }

    private var isScalar: Bool {
        switch self {
        case .array, .object: false
        default: true
        }
    }
}
