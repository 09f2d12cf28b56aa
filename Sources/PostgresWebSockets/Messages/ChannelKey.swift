/// A channel name compared and hashed by its UTF-8 bytes, as PostgreSQL compares them.
///
/// Swift's String equality is canonical equivalence: "caf\u{E9}" == "cafe\u{301}". Keyed by
/// String, two distinct PostgreSQL channels would share one LISTEN and one subscriber list,
/// and a socket allowed on one would read the other.
struct ChannelKey: Hashable, Sendable {
    let name: String

    init(_ name: String) {
        self.name = name
    }

    static func == (lhs: ChannelKey, rhs: ChannelKey) -> Bool {
        lhs.name.utf8.elementsEqual(rhs.name.utf8)
    }

    func hash(into hasher: inout Hasher) {
        var name = self.name
        name.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}
