/// Decodes `%XX` escapes in a URL path segment. Returns nil for a `%` that is not
/// followed by two hex digits.
func percentDecode(_ text: Substring) -> [UInt8]? {
    var out: [UInt8] = []
    out.reserveCapacity(text.utf8.count)
    var iterator = text.utf8.makeIterator()
    while let byte = iterator.next() {
        guard byte == UInt8(ascii: "%") else {
            out.append(byte)
            continue
        }
        guard let high = iterator.next().flatMap(hexDigitValue), let low = iterator.next().flatMap(hexDigitValue)
        else {
            return nil
        }
        out.append(high << 4 | low)
    }
    return out
}
