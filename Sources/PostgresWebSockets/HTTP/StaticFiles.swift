#if canImport(Glibc)
    import Glibc
#endif

/// The folder given by `server-root`, served on plain GET requests. Every path is resolved
/// with realpath(3) and must stay inside the folder, so neither `..` nor a symlink can
/// reach a file outside it.
final class StaticFiles: Sendable {
    static let maxFileSize = 32 << 20
    let root: String

    init(root: String) throws(ConfigurationError) {
        guard let resolved = Self.realPath(root) else {
            throw ConfigurationError("server-root: cannot open folder \(root)")
        }
        guard Self.isDirectory(resolved) else { throw ConfigurationError("server-root: \(root) is not a folder") }
        self.root = resolved
    }

    /// The file that `path` (the request path, without query) names, or nil.
    func resolve(_ path: Substring) -> String? {
        var segments: [String] = []
        for raw in path.split(separator: "/") {
            guard let bytes = percentDecode(raw), !bytes.contains(0),
                let segment = String(validating: bytes, as: UTF8.self),
                segment != ".", segment != "..", !segment.contains("/")
            else { return nil }
            segments.append(segment)
        }
        var candidate = ([root] + segments).joined(separator: "/")
        guard var resolved = Self.realPath(candidate), isInside(resolved) else { return nil }
        if Self.isDirectory(resolved) {
            candidate = resolved + "/index.html"
            guard let index = Self.realPath(candidate), isInside(index) else { return nil }
            resolved = index
        }
        return Self.isRegularFile(resolved) ? resolved : nil
    }

    private func isInside(_ path: String) -> Bool {
        path == root || path.hasPrefix(root.hasSuffix("/") ? root : root + "/")
    }

    static func contentType(for path: String) -> String {
        let ext = path.split(separator: ".").last.map { $0.lowercased() } ?? ""
        switch ext {
        case "html", "htm": return "text/html; charset=utf-8"
        case "js", "mjs": return "text/javascript; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "json", "map": return "application/json"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "jpg", "jpeg": return "image/jpeg"
        case "gif": return "image/gif"
        case "ico": return "image/x-icon"
        case "wasm": return "application/wasm"
        case "txt", "conf": return "text/plain; charset=utf-8"
        default: return "application/octet-stream"
        }
    }

    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    private static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    private static func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }
}
