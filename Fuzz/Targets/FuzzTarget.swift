#if canImport(Glibc)
    import Glibc
#endif

/// One fuzz target: its name on the command line and the function each input is given to.
/// A target checks properties with `expect`, which aborts (libFuzzer keeps the input).
struct FuzzTarget: Sendable {
    let name: String
    let summary: String
    let run: @Sendable (UnsafeRawBufferPointer) -> Void

    /// The target of this process (libFuzzer's callback cannot capture it).
    nonisolated(unsafe) static var current: FuzzTarget? = nil

    static func files(at path: String) -> [String] {
        guard let directory = opendir(path) else { return [path] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if !name.hasPrefix(".") { names.append(path + "/" + name) }
        }
        return names.sorted()
    }

    static func read(_ path: String) -> [UInt8]? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count == 0 { break }
            bytes += chunk[..<count]
        }
        return bytes
    }
}

/// Stops the run when a property does not hold: libFuzzer saves the input as a crash.
func expect(
    _ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line
) {
    guard !condition else { return }
    writeError("PROPERTY FAILED (\(file):\(line)): \(message())\n")
    abort()
}

/// Reads structured values off the front of a fuzz input; past its end everything is zero.
struct FuzzInput {
    private let bytes: UnsafeRawBufferPointer
    private(set) var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    var isAtEnd: Bool { offset >= bytes.count }

    mutating func byte() -> UInt8 {
        guard offset < bytes.count else { return 0 }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func take(_ count: Int) -> [UInt8] {
        let end = min(bytes.count, offset + max(0, count))
        defer { offset = end }
        return Array(bytes[min(offset, end)..<end])
    }

    /// Bytes up to the next `separator` (dropped) or the end.
    mutating func field(separator: UInt8 = 0) -> [UInt8] {
        var result: [UInt8] = []
        while offset < bytes.count {
            let byte = bytes[offset]
            offset += 1
            if byte == separator { break }
            result.append(byte)
        }
        return result
    }

    mutating func rest() -> [UInt8] {
        take(bytes.count - offset)
    }
}

extension String {
    /// For messages: the text with everything but printable ASCII escaped.
    var debugEscaped: String {
        var out = ""
        for scalar in unicodeScalars {
            if scalar.value >= 0x20, scalar.value < 0x7F {
                out.unicodeScalars.append(scalar)
            } else {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            }
        }
        return out
    }
}

/// Whether `text` could stand on one log line: no control character, no line break.
func isPrintableLine(_ text: String) -> Bool {
    !text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F || $0 == "\u{2028}" || $0 == "\u{2029}" }
}

/// Writes `text` to standard error, unbuffered.
func writeError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}
