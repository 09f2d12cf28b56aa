/// Parses the `key = value` format of postgres-websockets' `sample.conf`:
/// strings in double quotes (with `\"`, `\\`, `\n`, `\t` escapes and `$(VAR)` taken from
/// the environment, `$$` for a `$`), bare numbers and booleans, `#` comments, blank lines.
public struct ConfigurationFile: Sendable {
    public struct Entry: Sendable, Equatable {
        public let value: String
        public let line: Int
    }

    public let path: String
    public let entries: [ConfigurationKey: Entry]

    public init(path: String, contents: String, environment: [String: String] = [:]) throws(ConfigurationError) {
        self.path = path
        var entries: [ConfigurationKey: Entry] = [:]
        var lineNumber = 0
        // "\r\n" is one Character in Swift, so splitting on "\n" alone would not split it.
        for rawLine in contents.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        {
            lineNumber += 1
            let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine
            // Read scalar by scalar: as Characters, a quote or `=` followed by a combining
            // mark would be one Character and not match.
            let trimmed = line.unicodeScalars.drop(while: { $0 == " " || $0 == "\t" })
            if trimmed.isEmpty || trimmed.first == "#" { continue }
            guard let equals = trimmed.firstIndex(of: "=") else {
                throw ConfigurationError("\(path):\(lineNumber): expected 'key = value'")
            }
            let name = Substring(trimmed[..<equals]).trimming()
            guard let key = ConfigurationKey(fileKey: name) else {
                throw ConfigurationError("\(path):\(lineNumber): unknown key '\(Self.quoted(name))'")
            }
            if let previous = entries[key] {
                throw ConfigurationError(
                    "\(path):\(lineNumber): '\(name)' is already set on line \(previous.line)")
            }
            let value = try Self.parseValue(
                Substring(trimmed[trimmed.index(after: equals)...]), path: path, line: lineNumber, key: key,
                environment: environment)
            entries[key] = Entry(value: value, line: lineNumber)
        }
        self.entries = entries
    }

    /// The operator's own text quoted in an error, control characters escaped (`\u{d}`): a
    /// lone CR or an escape character must not break or rewrite the error's line.
    static func quoted(_ text: some StringProtocol) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7F {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    private static func parseValue(
        _ text: Substring, path: String, line: Int, key: ConfigurationKey, environment: [String: String]
    ) throws(ConfigurationError) -> String {
        let text = text.unicodeScalars.drop(while: { $0 == " " || $0 == "\t" })
        guard text.first == "\"" else {
            let bare = Substring(text.firstIndex(of: "#").map { text[..<$0] } ?? text).trimming()
            guard !bare.isEmpty else { throw ConfigurationError("\(path):\(line): '\(key.rawValue)' has no value") }
            return String(bare)
        }
        var value = String.UnicodeScalarView()
        var index = text.index(after: text.startIndex)
        while true {
            guard index < text.endIndex else {
                throw ConfigurationError("\(path):\(line): unterminated string for '\(key.rawValue)'")
            }
            let character = text[index]
            index = text.index(after: index)
            if character == "\"" { break }
            if character == "$", index < text.endIndex, text[index] == "$" {
                value.append("$")
                index = text.index(after: index)
            } else if character == "$", index < text.endIndex, text[index] == "(" {
                // Old postgres-websockets config files: "$(PGWS_DB_URI)".
                guard let close = text[index...].firstIndex(of: ")") else {
                    throw ConfigurationError("\(path):\(line): unterminated $( in the value of '\(key.rawValue)'")
                }
                let name = String(Substring(text[text.index(after: index)..<close]))
                guard let variable = environment[name] else {
                    throw ConfigurationError(
                        "\(path):\(line): '\(key.rawValue)' uses $(\(quoted(name))), which is not set in the environment"
                    )
                }
                value.append(contentsOf: variable.unicodeScalars)
                index = text.index(after: close)
            } else if character == "\\" {
                guard index < text.endIndex else {
                    throw ConfigurationError("\(path):\(line): unterminated string for '\(key.rawValue)'")
                }
                switch text[index] {
                case "n": value.append("\n")
                case "t": value.append("\t")
                case "\"": value.append("\"")
                case "\\": value.append("\\")
                default:
                    throw ConfigurationError(
                        "\(path):\(line): unknown escape '\\\(quoted(String(text[index])))' for '\(key.rawValue)'")
                }
                index = text.index(after: index)
            } else {
                value.append(character)
            }
        }
        let rest = Substring(text[index...]).trimming()
        guard rest.isEmpty || rest.unicodeScalars.first == "#" else {
            throw ConfigurationError("\(path):\(line): unexpected text after the value of '\(key.rawValue)'")
        }
        return String(value)
    }
}
