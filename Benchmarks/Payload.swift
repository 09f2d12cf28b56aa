/// The text every measured message carries: `p<phase>:s<seq>:t<micros>:` padded with `x`
/// to the payload size (NOTIFYs), or `w<writer>:s<seq>:t<micros>:` padded (client
/// messages). `t` is CLOCK_REALTIME in microseconds, read just before the statement or
/// frame carrying it was sent; the receiver subtracts it from its own clock.
enum Payload {
    struct Fields: Equatable {
        /// Phase (NOTIFY streams) or writer id (client messages).
        var tag: Int
        var seq: Int
        var sentMicros: Int64
    }

    static func notify(phase: Int, seq: Int, sentMicros: Int64, size: Int) -> String {
        pad("p\(phase):s\(seq):t\(sentMicros):", to: size)
    }

    static func writer(id: Int, seq: Int, sentMicros: Int64, size: Int) -> String {
        pad("w\(id):s\(seq):t\(sentMicros):", to: size)
    }

    static func pad(_ prefix: String, to size: Int) -> String {
        let missing = size - prefix.utf8.count
        return missing > 0 ? prefix + String(repeating: "x", count: missing) : prefix
    }

    /// The SQL expression that builds the same text inside PostgreSQL for row `g`, from the
    /// parameters phase, send time and size: `rpad('p' || phase || ':s' || g || ...)`.
    static func sqlExpression(phase: String, seq: String, sentMicros: String, size: String) -> String {
        "rpad('p' || \(phase) || ':s' || \(seq) || ':t' || \(sentMicros) || ':', \(size), 'x')"
    }

    /// Parses the three numbers after the leading tag letter `lead` (`p` or `w`).
    static func parse(_ bytes: UnsafeRawBufferPointer, lead: UInt8 = UInt8(ascii: "p")) -> Fields? {
        var index = 0
        func number() -> Int64? {
            var value: Int64 = 0
            let start = index
            while index < bytes.count {
                let byte = bytes[index]
                guard byte >= 48 && byte <= 57 else { break }
                value = value &* 10 &+ Int64(byte - 48)
                index += 1
            }
            return index > start && index - start <= 18 ? value : nil
        }
        func expect(_ byte: UInt8) -> Bool {
            guard index < bytes.count, bytes[index] == byte else { return false }
            index += 1
            return true
        }
        guard expect(lead), let tag = number(), expect(UInt8(ascii: ":")), expect(UInt8(ascii: "s")),
            let seq = number(), expect(UInt8(ascii: ":")), expect(UInt8(ascii: "t")), let sent = number(),
            expect(UInt8(ascii: ":"))
        else { return nil }
        return Fields(tag: Int(tag), seq: Int(seq), sentMicros: sent)
    }

    static func parse(_ text: String, lead: UInt8 = UInt8(ascii: "p")) -> Fields? {
        var copy = text
        return copy.withUTF8 { parse(UnsafeRawBufferPointer($0), lead: lead) }
    }
}
