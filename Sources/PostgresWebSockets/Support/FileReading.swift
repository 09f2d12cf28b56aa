#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Reads a whole (small) file. Used at start-up for `@path` settings, never on an event loop.
func readWholeFile(_ path: String, limit: Int = 1 << 20) -> Result<[UInt8], ConfigurationError> {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
        return .failure(ConfigurationError("cannot read \(path): \(String(cString: strerror(errno)))"))
    }
    defer { close(fd) }
    var contents: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            return .failure(ConfigurationError("cannot read \(path): \(String(cString: strerror(errno)))"))
        }
        if n == 0 { break }
        contents.append(contentsOf: chunk[0..<n])
        if contents.count > limit { return .failure(ConfigurationError("\(path) is larger than \(limit) bytes")) }
    }
    return .success(contents)
}
