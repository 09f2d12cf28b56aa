import Foundation
import NIOCore
import NIOPosix

/// One thing a server-sent event stream says: an event (its `id`, `event` type and `data`
/// lines joined with LF, as EventSource joins them), a comment line, or its end.
public enum StreamEvent: Sendable, Equatable {
    case event(id: String?, type: String?, data: String)
    case comment(String)
    case ended
}

/// A server-sent events client over a real TCP connection, parsing the stream as the
/// EventSource specification does (fields, comments, the blank line that ends an event).
public final class EventStreamClient: Sendable {
    public let status: Int
    public let headers: [String: String]
    private let channel: any Channel
    private let events: EventQueue<StreamEvent>

    private init(status: Int, headers: [String: String], channel: any Channel, events: EventQueue<StreamEvent>) {
        self.status = status
        self.headers = headers
        self.channel = channel
        self.events = events
    }

    /// Sends `GET path` with `Accept: text/event-stream` and `headers`; returns once the
    /// response head arrived (whatever its status; a refusal's body is in `refusalBody`).
    public static func open(port: Int, path: String, headers: [(String, String)] = []) async throws
        -> EventStreamClient
    {
        let events = EventQueue<StreamEvent>()
        let head = EventQueue<(Int, [String: String])>()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Parser(head: head, events: events))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAccept: text/event-stream\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        try await channel.writeAndFlush(ByteBuffer(string: request + "\r\n"))
        let (status, responseHeaders) = try await head.next(timeout: 15)
        return EventStreamClient(status: status, headers: responseHeaders, channel: channel, events: events)
    }

    /// The next event or comment (or the stream's end).
    public func next(timeout: Double = 10) async throws -> StreamEvent {
        try await events.next(timeout: timeout)
    }

    /// The next event, skipping comments.
    public func nextEvent(timeout: Double = 10) async throws -> StreamEvent {
        let deadline = Deadline(seconds: timeout)
        while true {
            let next = try await events.next(timeout: try deadline.remaining())
            if case .comment = next { continue }
            return next
        }
    }

    /// A refused request's one-line body (the stream of a refusal is its body).
    public func refusalBody(timeout: Double = 10) async throws -> String {
        guard case .event(_, _, let data) = try await events.next(timeout: timeout) else { return "" }
        return data
    }

    public func close() async {
        try? await channel.close()
    }

    private final class Parser: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let head: EventQueue<(Int, [String: String])>
        let events: EventQueue<StreamEvent>
        private var buffer = ByteBuffer()
        private var status: Int? = nil
        private var id: String? = nil
        private var type: String? = nil
        private var data: [String] = []

        init(head: EventQueue<(Int, [String: String])>, events: EventQueue<StreamEvent>) {
            self.head = head
            self.events = events
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var incoming = unwrapInboundIn(data)
            buffer.writeBuffer(&incoming)
            if status == nil {
                guard let end = buffer.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
                let text = buffer.readString(length: end.upperBound - buffer.readableBytesView.startIndex) ?? ""
                let lines = text.components(separatedBy: "\r\n")
                let code = lines.first.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
                var headers: [String: String] = [:]
                for line in lines.dropFirst() {
                    guard let colon = line.firstIndex(of: ":") else { continue }
                    headers[line[..<colon].lowercased()] = line[line.index(after: colon)...]
                        .trimmingCharacters(in: .whitespaces)
                }
                status = code
                head.push((code, headers))
                if code != 200 {
                    // A refusal: its body is one line, reported as one event's data.
                    return
                }
            }
            guard status == 200 else { return }
            while let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
                let line = buffer.readString(length: newline - buffer.readableBytesView.startIndex) ?? ""
                buffer.moveReaderIndex(forwardBy: 1)
                parse(line)
            }
        }

        private func parse(_ line: String) {
            if line.isEmpty {
                if !data.isEmpty || type != nil || id != nil {
                    events.push(.event(id: id, type: type, data: data.joined(separator: "\n")))
                }
                (id, type, data) = (nil, nil, [])
            } else if line.hasPrefix(":") {
                events.push(.comment(String(line.dropFirst()).trimmingCharacters(in: .whitespaces)))
            } else {
                let colon = line.firstIndex(of: ":") ?? line.endIndex
                let field = String(line[..<colon])
                var value = colon == line.endIndex ? "" : String(line[line.index(after: colon)...])
                if value.hasPrefix(" ") { value.removeFirst() }
                switch field {
                case "id": id = value
                case "event": type = value
                case "data": data.append(value)
                default: break
                }
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            if status != nil, status != 200 {
                events.push(.event(id: nil, type: nil, data: buffer.readString(length: buffer.readableBytes) ?? ""))
            }
            events.push(.ended)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
