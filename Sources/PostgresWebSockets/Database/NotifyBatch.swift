import CLibPQ

/// Many NOTIFYs in one statement: PostgreSQL commits one transaction for the whole batch,
/// which is what lets it take hundreds of thousands of notifications per second instead of
/// one commit each. Channels and payloads travel as two binary `text[]` parameters, so no
/// value is ever spliced into SQL text and nothing needs escaping.
struct NotifyBatch {
    static let sql = "SELECT count(pg_notify(c, p)) FROM unnest($1::text[], $2::text[]) AS m(c, p)"
    /// With durable channels: stored (one row per message, its offset) or NOTIFYed (NULL).
    static let durableSQL = "SELECT pgws.send(c, p) FROM unnest($1::text[], $2::text[]) AS m(c, p)"
    static let textArrayOID: Oid = 1009
    static let textOID: UInt32 = 25

    private(set) var channels: [UInt8] = []
    private(set) var payloads: [UInt8] = []
    private(set) var count = 0
    private(set) var byteCount = 0

    init() {
        channels.reserveCapacity(4096)
        payloads.reserveCapacity(64 * 1024)
    }

    mutating func append(channel: String, payload: [UInt8]) {
        Self.appendElement(channel.utf8, to: &channels)
        Self.appendElement(payload, to: &payloads)
        count += 1
        byteCount += channel.utf8.count + payload.count
    }

    /// The two parameters in PostgreSQL's binary array format.
    var parameters: [[UInt8]] {
        [Self.arrayHeader(count: count) + channels, Self.arrayHeader(count: count) + payloads]
    }

    private static func appendElement(_ bytes: some Collection<UInt8>, to buffer: inout [UInt8]) {
        appendInt32(Int32(bytes.count), to: &buffer)
        buffer.append(contentsOf: bytes)
    }

    private static func arrayHeader(count: Int) -> [UInt8] {
        var header: [UInt8] = []
        header.reserveCapacity(20)
        appendInt32(1, to: &header)  // dimensions
        appendInt32(0, to: &header)  // no NULLs
        appendInt32(Int32(bitPattern: textOID), to: &header)
        appendInt32(Int32(count), to: &header)
        appendInt32(1, to: &header)  // lower bound
        return header
    }

    private static func appendInt32(_ value: Int32, to buffer: inout [UInt8]) {
        let big = UInt32(bitPattern: value).bigEndian
        withUnsafeBytes(of: big) { buffer.append(contentsOf: $0) }
    }
}
