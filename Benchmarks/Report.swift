import Foundation

/// A goal a figure is compared to.
struct Target: Codable, Sendable {
    enum Comparison: String, Codable, Sendable { case atMost = "<=", below = "<", atLeast = ">=" }
    var comparison: Comparison
    var value: Double

    static func atMost(_ value: Double) -> Target { Target(comparison: .atMost, value: value) }
    static func below(_ value: Double) -> Target { Target(comparison: .below, value: value) }
    static func atLeast(_ value: Double) -> Target { Target(comparison: .atLeast, value: value) }

    func isMet(by value: Double) -> Bool {
        switch comparison {
        case .atMost: value <= self.value
        case .below: value < self.value
        case .atLeast: value >= self.value
        }
    }
}

/// One measured number with its unit and how it was measured.
struct Figure: Codable, Sendable {
    var scenario: String
    var name: String
    var value: Double?
    var unit: String
    var target: Target?
    var met: Bool?
    /// How the figure was measured.
    var method: String
    /// The load it was measured under (stream, sockets), when that is not in the method.
    var workload: String?
}

/// Everything a run found: figures, failures (each one makes the exit status 1), notes.
final class Report {
    private(set) var figures: [Figure] = []
    private(set) var failures: [String] = []
    private(set) var notes: [String] = []

    func add(
        _ scenario: String, _ name: String, _ value: Double?, _ unit: String, target: Target? = nil, method: String,
        workload: String? = nil
    ) {
        let met = target.flatMap { target in value.map { target.isMet(by: $0) } }
        figures.append(
            Figure(
                scenario: scenario, name: name, value: value, unit: unit, target: target, met: met, method: method,
                workload: workload))
    }

    func fail(_ scenario: String, _ message: String) {
        failures.append("\(scenario): \(message)")
        FileHandle.standardError.write(Data("FAILED \(scenario): \(message)\n".utf8))
    }

    func note(_ text: String) {
        notes.append(text)
        FileHandle.standardError.write(Data("note: \(text)\n".utf8))
    }

    // MARK: - Table

    func table() -> String {
        var methods: [String] = []
        var workloads: [String] = []
        func footnote(_ text: String, in list: inout [String]) -> Int {
            if let index = list.firstIndex(of: text) { return index + 1 }
            list.append(text)
            return list.count
        }
        let header = ["scenario", "figure", "value", "target", "met", "how"]
        var rows: [[String]] = []
        for figure in figures {
            let target = figure.target.map { "\($0.comparison.rawValue) \(Self.format($0.value, figure.unit))" } ?? ""
            let met = figure.met.map { $0 ? "yes" : "NO" } ?? ""
            rows.append([
                figure.scenario, figure.name, figure.value.map { Self.format($0, figure.unit) } ?? "n/a", target, met,
                "[\(footnote(figure.method, in: &methods))]"
                    + (figure.workload.map { "[w\(footnote($0, in: &workloads))]" } ?? ""),
            ])
        }
        var widths = header.map(\.count)
        for row in rows {
            for (column, cell) in row.enumerated() { widths[column] = max(widths[column], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                column == 2 || column == 3
                    ? String(repeating: " ", count: widths[column] - cell.count) + cell
                    : cell + String(repeating: " ", count: widths[column] - cell.count)
            }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        var text = [line(header), line(widths.map { String(repeating: "-", count: $0) })]
        var previous = ""
        for row in rows {
            if row[0] != previous && !text.isEmpty && previous != "" { text.append("") }
            previous = row[0]
            text.append(line(row))
        }
        text.append("")
        text.append("How each figure was measured:")
        for (index, method) in methods.enumerated() { text.append("[\(index + 1)] \(method)") }
        if !workloads.isEmpty {
            text.append("Under which load:")
            for (index, workload) in workloads.enumerated() { text.append("[w\(index + 1)] \(workload)") }
        }
        if !notes.isEmpty {
            text.append("")
            text += notes.map { "note: \($0)" }
        }
        if !failures.isEmpty {
            text.append("")
            text += failures.map { "FAILED \($0)" }
        }
        return text.joined(separator: "\n")
    }

    static func format(_ value: Double, _ unit: String) -> String {
        let number: String
        switch abs(value) {
        case 1000...: number = grouped(Int(value.rounded()))
        case 100..<1000: number = String(format: "%.0f", value)
        case 10..<100: number = String(format: "%.1f", value)
        case 0.1..<10: number = String(format: "%.2f", value)
        case 0: number = "0"
        default: number = String(format: "%.3f", value)
        }
        return unit.isEmpty ? number : "\(number) \(unit)"
    }

    static func grouped(_ value: Int) -> String {
        let digits = String(abs(value))
        var out = ""
        for (index, character) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { out.append(",") }
            out.append(character)
        }
        return (value < 0 ? "-" : "") + out
    }

    // MARK: - JSON

    struct Document: Codable {
        var generatedAt: String
        var machine: [String: String]
        var options: [String: String]
        var figures: [Figure]
        var failures: [String]
        var notes: [String]
    }

    func write(to path: String, machine: [String: String], options: [String: String]) throws {
        let formatter = ISO8601DateFormatter()
        let document = Document(
            generatedAt: formatter.string(from: Date()), machine: machine, options: options, figures: figures,
            failures: failures, notes: notes)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(document).write(to: URL(fileURLWithPath: path))
    }
}

/// One line on stdout, written at once (progress must show while a scenario runs).
func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
