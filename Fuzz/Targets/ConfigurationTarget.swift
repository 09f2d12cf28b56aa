@testable import PostgresWebSockets

/// The configuration file parser, and the configuration built from what it read.
///
/// Properties:
/// - a file that parses is read the same when written back in the canonical form (each
///   entry as `key = "value"` with escapes, in another order, with `\r\n` line ends): the
///   same keys with the same values, scalar for scalar;
/// - an error is one line (no line break; it may quote the file's own characters) naming the file;
/// - building a configuration from what parsed either works or fails with one line that never
///   contains the secret or the database URI (when they are long enough to tell).
///
/// Values naming files under /dev, /proc or /sys are left out of the build step: `@/dev/stdin`
/// would wait for input, which is the operator's doing, not a parser's fault.
enum ConfigurationTarget {
    static let target = FuzzTarget(name: "config", summary: "ConfigurationFile and Configuration.load", run: run)

    static let environment = ["HOME": "/home/pgws", "EMPTY": "", "PGWS_FUZZ": "a \"quoted\" $(value) with\nlines"]

    static func run(_ data: UnsafeRawBufferPointer) {
        let text = String(decoding: data, as: UTF8.self)
        let file: ConfigurationFile
        do throws(ConfigurationError) {
            file = try ConfigurationFile(path: "fuzz.conf", contents: text, environment: environment)
        } catch {
            expect(isOneLine(error.message), "error is not one line: \(error.message.debugEscaped)")
            expect(error.message.hasPrefix("fuzz.conf:"), "error does not name the file: \(error.message.debugEscaped)")
            return
        }

        let entries = file.entries.sorted { $0.value.line > $1.value.line }
        let canonical = entries.map { "\($0.key.rawValue) = \"\(escape($0.value.value))\"\r\n" }.joined()
        do throws(ConfigurationError) {
            let again = try ConfigurationFile(path: "again.conf", contents: canonical, environment: [:])
            expect(again.entries.count == file.entries.count, "written back, \(again.entries.count) entries")
            for (key, entry) in file.entries {
                expect(
                    again.entries[key]?.value.unicodeScalars.elementsEqual(entry.value.unicodeScalars) == true,
                    "\(key.rawValue): \(entry.value.debugEscaped) read back as \(again.entries[key]?.value.debugEscaped ?? "nothing")"
                )
            }
        } catch {
            expect(
                false, "the canonical form does not parse: \(error.message.debugEscaped) in \(canonical.debugEscaped)")
        }

        guard
            !file.entries.values.contains(where: {
                $0.value.contains("/dev") || $0.value.contains("/proc") || $0.value.contains("/sys")
            })
        else { return }
        do throws(ConfigurationError) {
            _ = try Configuration.load(file: file, environment: [:])
        } catch {
            expect(isOneLine(error.message), "load error is not one line: \(error.message.debugEscaped)")
            for secret in [ConfigurationKey.jwtSecret, .databaseURI] {
                guard let value = file.entries[secret]?.value, value.utf8.count >= 12, !value.hasPrefix("@"),
                    !file.entries.contains(where: { $0.key != secret && $0.value.value.contains(value) })
                else { continue }
                expect(!error.message.contains(value), "\(secret.rawValue) echoed: \(error.message.debugEscaped)")
            }
        }
    }

    /// Errors quote the operator's own text (a key name, a value), control characters and all;
    /// what they must not do is break the line.
    static func isOneLine(_ text: String) -> Bool {
        !text.unicodeScalars.contains { $0 == "\n" || $0 == "\r" }
    }

    static func escape(_ value: String) -> String {
        var out = ""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "$": out += "$$"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
