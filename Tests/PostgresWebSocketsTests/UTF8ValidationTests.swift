import Testing

@testable import PostgresWebSockets

@Suite struct UTF8ValidationTests {
    /// The standard library's decoder is the reference: it follows the same table.
    static func reference(_ bytes: [UInt8]) -> Bool {
        var iterator = bytes.makeIterator()
        var decoder = Unicode.UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }

    static func validate(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes(isValidUTF8)
    }

    @Test func everySequenceOfUpToThreeBytesAgreesWithTheStandardLibrary() {
        var disagreements: [[UInt8]] = []
        for a in 0...255 {
            let one = [UInt8(a)]
            if Self.validate(one) != Self.reference(one) { disagreements.append(one) }
            for b in 0...255 {
                let two = [UInt8(a), UInt8(b)]
                if Self.validate(two) != Self.reference(two) { disagreements.append(two) }
                guard a >= 0xC0 else { continue }
                for c in 0...255 {
                    let three = [UInt8(a), UInt8(b), UInt8(c)]
                    if Self.validate(three) != Self.reference(three) { disagreements.append(three) }
                }
            }
        }
        #expect(disagreements.isEmpty, "\(disagreements.prefix(10))")
    }

    @Test func fourByteSequencesAndTheirBoundsAgree() {
        var disagreements: [[UInt8]] = []
        for a: UInt8 in 0xEF...0xF5 {
            for b: UInt8 in [0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0] {
                for c: UInt8 in [0x7F, 0x80, 0xBF, 0xC0] {
                    for d: UInt8 in [0x7F, 0x80, 0xBF, 0xC0] {
                        let four = [a, b, c, d]
                        if Self.validate(four) != Self.reference(four) { disagreements.append(four) }
                    }
                }
            }
        }
        #expect(disagreements.isEmpty, "\(disagreements.prefix(10))")
    }

    /// Long inputs go through the eight-byte ASCII step: an error anywhere, at every
    /// alignment, is still found, and text with multibyte characters at every offset passes.
    @Test func longInputsAgreeAtEveryAlignment() {
        var generator = SystemRandomNumberGenerator()
        let pieces: [[UInt8]] = [
            Array("a".utf8), Array("é".utf8), Array("€".utf8), Array("𝄞".utf8), [0xC0, 0x80], [0xED, 0xA0, 0x80],
            [0xF4, 0x90, 0x80, 0x80], [0x80], [0xE2, 0x82],
        ]
        for _ in 0..<5000 {
            var bytes: [UInt8] = []
            let length = Int.random(in: 0...40, using: &generator)
            for _ in 0..<length {
                // Mostly ASCII, so runs of eight occur.
                let piece = Int.random(in: 0..<20, using: &generator)
                bytes += piece < pieces.count ? pieces[piece] : [UInt8.random(in: 0x20...0x7E, using: &generator)]
            }
            #expect(Self.validate(bytes) == Self.reference(bytes), "\(bytes)")
        }
    }
}
