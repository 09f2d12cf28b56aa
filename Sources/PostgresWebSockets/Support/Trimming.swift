extension Substring {
    /// Drops the bytes `isTrimmed` names from both ends, without allocating: spaces and tabs
    /// (HTTP's optional whitespace, the config file's blanks) unless told otherwise.
    func trimming(where isTrimmed: (UInt8) -> Bool = isSpaceOrTab) -> Substring {
        var start = utf8.startIndex
        var end = utf8.endIndex
        while start < end, isTrimmed(utf8[start]) { start = utf8.index(after: start) }
        while end > start, isTrimmed(utf8[utf8.index(before: end)]) { end = utf8.index(before: end) }
        return self[start..<end]
    }
}

extension String {
    func trimming(where isTrimmed: (UInt8) -> Bool = isSpaceOrTab) -> Substring {
        self[...].trimming(where: isTrimmed)
    }
}

func isSpaceOrTab(_ byte: UInt8) -> Bool {
    byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t")
}

/// ASCII whitespace: what editors and shells leave around a value pasted into a file or a variable.
func isASCIIWhitespace(_ byte: UInt8) -> Bool {
    isSpaceOrTab(byte) || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") || byte == 0x0B || byte == 0x0C
}
