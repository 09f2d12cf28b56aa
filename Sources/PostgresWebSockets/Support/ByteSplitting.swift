extension Substring {
    /// The pieces between occurrences of the ASCII byte `separator`, found by UTF-8 code unit:
    /// a combining mark after a separator does not hide it, as it would from a `Character`
    /// search, and no grapheme breaking is paid for (a third of a handshake's parsing was).
    func split(byte separator: UInt8, maxSplits: Int = .max, omittingEmpty: Bool) -> [Substring] {
        var pieces: [Substring] = []
        var start = utf8.startIndex
        var index = start
        while index < utf8.endIndex {
            if utf8[index] == separator, pieces.count < maxSplits {
                if !(omittingEmpty && start == index) { pieces.append(self[start..<index]) }
                start = utf8.index(after: index)
            }
            index = utf8.index(after: index)
        }
        if !(omittingEmpty && start == utf8.endIndex) { pieces.append(self[start..<utf8.endIndex]) }
        return pieces
    }

    /// The index of the first ASCII byte `byte`, by UTF-8 code unit.
    func firstIndex(ofByte byte: UInt8) -> Index? {
        utf8.firstIndex(of: byte)
    }
}
