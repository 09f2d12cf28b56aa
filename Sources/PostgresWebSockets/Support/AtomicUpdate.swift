import Synchronization

extension Atomic where Value: Equatable, Value.AtomicRepresentation == _Atomic64BitStorage {
    /// Replaces the value with `transform(value)` unless it returns nil, retrying when another
    /// thread changed the value meanwhile. Returns the new value, or nil when nothing changed.
    @discardableResult
    func update(_ transform: (Value) -> Value?) -> Value? {
        var current = load(ordering: .relaxed)
        while let desired = transform(current) {
            let (exchanged, original) = compareExchange(expected: current, desired: desired, ordering: .relaxed)
            if exchanged { return desired }
            current = original
        }
        return nil
    }
}
