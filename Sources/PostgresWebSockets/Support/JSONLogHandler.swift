import Logging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `log-format = json`: one JSON object per line, `time` (UTC, milliseconds), `level` and
/// `message` first, then every metadata key as a field of its own, as log collectors (Loki,
/// Elasticsearch, CloudWatch) index them. A metadata key named like one of the three keeps
/// its value under `meta_<key>`, so that the line is still one object with unique keys.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let sink: @Sendable ([UInt8]) -> Void

    /// Writes each line with one `write(2)` to standard error, so that lines of concurrent
    /// loggers never interleave.
    public static func standardError() -> JSONLogHandler {
        JSONLogHandler(sink: writeToStandardError)
    }

    /// `sink` gets each line, newline included.
    public init(sink: @escaping @Sendable ([UInt8]) -> Void) {
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        sink(Self.line(event, handlerMetadata: metadata, provided: metadataProvider?.get()))
    }

    static func line(
        _ event: LogEvent, handlerMetadata: Logger.Metadata, provided: Logger.Metadata?,
        microseconds: Int64 = WallClock.microseconds()
    ) -> [UInt8] {
        var fields = handlerMetadata
        if let provided { fields.merge(provided) { $1 } }
        if let own = event.metadata { fields.merge(own) { $1 } }
        if let error = event.error, fields["error"] == nil { fields["error"] = "\(error)" }
        var json = JSONWriter(capacity: 192)
        json.raw("{\"time\":")
        json.string(utcTimestamp(microseconds: microseconds))
        json.raw(",\"level\":")
        json.string(event.level.rawValue)
        json.raw(",\"message\":")
        json.string(event.message.description)
        for key in fields.keys.sorted() {
            json.raw(",")
            json.string(reservedKeys.contains(key) ? "meta_" + key : key)
            json.raw(":")
            value(fields[key]!, into: &json)
        }
        json.raw("}\n")
        return json.bytes
    }

    private static let reservedKeys: Set<String> = ["time", "level", "message"]

    private static func value(_ value: Logger.MetadataValue, into json: inout JSONWriter) {
        switch value {
        case .string(let text): json.string(text)
        case .stringConvertible(let convertible): json.string(convertible.description)
        case .array(let items):
            json.raw("[")
            for (index, item) in items.enumerated() {
                if index > 0 { json.raw(",") }
                Self.value(item, into: &json)
            }
            json.raw("]")
        case .dictionary(let members):
            json.raw("{")
            for (index, key) in members.keys.sorted().enumerated() {
                if index > 0 { json.raw(",") }
                json.string(key)
                json.raw(":")
                Self.value(members[key]!, into: &json)
            }
            json.raw("}")
        }
    }

    /// `2026-11-30T13:45:07.123Z`.
    static func utcTimestamp(microseconds: Int64) -> String {
        var seconds = time_t(microseconds / 1_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func padded(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        let milliseconds = Int32((microseconds % 1_000_000) / 1000)
        return padded(parts.tm_year + 1900, 4) + "-" + padded(parts.tm_mon + 1, 2) + "-" + padded(parts.tm_mday, 2)
            + "T" + padded(parts.tm_hour, 2) + ":" + padded(parts.tm_min, 2) + ":" + padded(parts.tm_sec, 2) + "."
            + padded(milliseconds, 3) + "Z"
    }
}

private func writeToStandardError(_ line: [UInt8]) {
    line.withUnsafeBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            let written = write(2, buffer.baseAddress! + offset, buffer.count - offset)
            if written > 0 {
                offset += written
            } else if written < 0 && errno == EINTR {
                continue
            } else {
                return
            }
        }
    }
}
