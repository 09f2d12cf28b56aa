import Logging
import NIOConcurrencyHelpers
import Testing

@testable import PostgresWebSockets

@Suite("JSON log lines")
struct JSONLogHandlerTests {
    private final class Lines: Sendable {
        let captured = NIOLockedValueBox<[[UInt8]]>([])
        var all: [[UInt8]] { captured.withLockedValue { $0 } }
    }

    private func logger(level: Logger.Level = .info) -> (Logger, Lines) {
        let lines = Lines()
        var handler = JSONLogHandler { line in lines.captured.withLockedValue { $0.append(line) } }
        handler.logLevel = level
        return (Logger(label: "test", factory: { _ in handler }), lines)
    }

    @Test("a line is one JSON object with time, level, message and each metadata key as a field")
    func fields() throws {
        var (logger, lines) = logger()
        logger[metadataKey: "host"] = "0.0.0.0"
        logger.log(
            level: .warning, "closing \"socket\"\nnow",
            metadata: ["socket_id": "7", "close_code": .stringConvertible(1008), "list": ["a", "b"]])
        let line = try #require(lines.all.first)
        #expect(line.last == UInt8(ascii: "\n"))
        #expect(line.filter { $0 == UInt8(ascii: "\n") }.count == 1, "a message's newline is escaped")
        let object = try JSONParser.parse(Array(line.dropLast()))
        #expect(object["level"] == .string("warning"))
        #expect(object["message"] == .string("closing \"socket\"\nnow"))
        #expect(object["socket_id"] == .string("7"))
        #expect(object["close_code"] == .string("1008"))
        #expect(object["host"] == .string("0.0.0.0"), "the handler's own metadata too")
        #expect(object["list"] == .array([.string("a"), .string("b")]))
        let time = try #require(object["time"]?.stringValue)
        #expect(time.count == 24 && time.hasSuffix("Z"), "\(time)")
    }

    @Test("metadata named time, level or message keeps its value under meta_")
    func reservedKeys() throws {
        let (logger, lines) = logger()
        logger.info("hello", metadata: ["level": "mine", "message": "also mine"])
        let object = try JSONParser.parse(Array(try #require(lines.all.first).dropLast()))
        #expect(object["level"] == .string("info"))
        #expect(object["message"] == .string("hello"))
        #expect(object["meta_level"] == .string("mine"))
        #expect(object["meta_message"] == .string("also mine"))
    }

    @Test("lines below the level are not written")
    func levels() {
        let (logger, lines) = logger(level: .notice)
        logger.info("quiet")
        logger.notice("loud")
        #expect(lines.all.count == 1)
    }

    @Test("timestamps are UTC with milliseconds")
    func timestamps() {
        #expect(JSONLogHandler.utcTimestamp(microseconds: 0) == "1970-01-01T00:00:00.000Z")
        // 2026-11-30T13:45:07.123456Z
        #expect(JSONLogHandler.utcTimestamp(microseconds: 1_796_046_307_123_456) == "2026-11-30T13:45:07.123Z")
    }
}
