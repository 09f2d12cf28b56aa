/// Prometheus' text exposition format (version 0.0.4): `# HELP`, `# TYPE`, then the samples
/// of each family. Values are gathered from their owners at scrape time (see `MetricsReport`),
/// so this only writes them.
struct PrometheusText {
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private(set) var text = ""

    enum Kind: String {
        case counter
        case gauge
        case histogram
    }

    private mutating func family(_ name: String, _ kind: Kind, _ help: String) {
        text += "# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n"
    }

    private mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{" + labels.map { "\($0.0)=\"\(Self.escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
        }
        text += " " + Self.format(value) + "\n"
    }

    mutating func counter(_ name: String, _ help: String, _ value: Double) {
        family(name, .counter, help)
        sample(name, [], value)
    }

    mutating func gauge(_ name: String, _ help: String, _ value: Double) {
        family(name, .gauge, help)
        sample(name, [], value)
    }

    /// One family with a sample per label value (`outcome="accepted"`, ...).
    mutating func labelled(_ name: String, _ kind: Kind, _ help: String, label: String, _ values: [(String, Double)]) {
        family(name, kind, help)
        for (labelValue, value) in values { sample(name, [(label, labelValue)], value) }
    }

    /// `counts[i]` observations fell in `(bounds[i-1], bounds[i]]`; the last count is above
    /// every bound. Written cumulatively, as the format wants.
    mutating func histogram(_ name: String, _ help: String, bounds: [Double], counts: [Int], sum: Double) {
        precondition(counts.count == bounds.count + 1)
        family(name, .histogram, help)
        var cumulative = 0
        for (index, bound) in bounds.enumerated() {
            cumulative += counts[index]
            sample(name + "_bucket", [("le", Self.format(bound))], Double(cumulative))
        }
        cumulative += counts[bounds.count]
        sample(name + "_bucket", [("le", "+Inf")], Double(cumulative))
        sample(name + "_sum", [], sum)
        sample(name + "_count", [], Double(cumulative))
    }

    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }

    private static func escapeHelp(_ text: String) -> String {
        escape(text, quotes: false)
    }

    private static func escapeLabel(_ text: String) -> String {
        escape(text, quotes: true)
    }

    private static func escape(_ text: String, quotes: Bool) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\"" where quotes: escaped += "\\\""
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
