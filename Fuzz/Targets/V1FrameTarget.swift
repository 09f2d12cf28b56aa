import NIOCore

@testable import PostgresWebSockets

/// The `pgws.v1` request parser (PROTOCOL.md) and the replies that echo a request's `ref`.
///
/// Properties:
/// - a frame is refused as "not a JSON object" exactly when the JSON parser refuses it or it
///   is not an object; a request is never parsed from anything else;
/// - a parsed request holds only what PROTOCOL.md allows (valid channel names, offsets of the
///   offset alphabet), and written back as a frame it parses to the same request;
/// - `ref` is a string or a number, and every reply echoes it exactly;
/// - every reply (and an error with the refusal's reason) is one text frame holding a JSON
///   object of the reply's type.
enum V1FrameTarget {
    static let target = FuzzTarget(name: "v1frame", summary: "V1Protocol.parse and its replies", run: run)

    static func run(_ data: UnsafeRawBufferPointer) {
        let bytes = Array(data)
        let frame = V1Protocol.parse(bytes)
        let json = try? JSONParser.parse(bytes)
        let isObject: Bool
        if case .object? = json { isObject = true } else { isObject = false }
        let notAnObject = V1Protocol.Failure(.badRequest, "the frame is not a JSON object")
        expect((frame.request == .failure(notAnObject)) == !isObject, "object or not: \(frame)")
        if let ref = frame.ref {
            switch ref {
            case .string, .number: expect(json?["ref"] == ref, "ref is not the frame's")
            default: expect(false, "ref \(ref.serialized.debugEscaped)")
            }
        }

        switch frame.request {
        case .success(let request):
            check(request, ref: frame.ref)
        case .failure(let failure):
            expect(isPrintableLine(failure.reason), "reason \(failure.reason.debugEscaped)")
            expectReply(V1Protocol.error(failure, ref: frame.ref), type: "error", ref: frame.ref)
        }
    }

    static func check(_ request: V1Protocol.Request, ref: JSONValue?) {
        var members: [(key: String, value: JSONValue)] = []
        if let ref { members.append(("ref", ref)) }
        switch request {
        case .subscribe(let channel, let since, let presence):
            expect(ChannelName.problem(with: channel) == nil, "subscribe to a bad channel")
            if let since { expect(V1Protocol.isOffset(since), "since \(since.debugEscaped)") }
            members += [("type", .string("subscribe")), ("channel", .string(channel)), ("presence", .bool(presence))]
            if let since { members.append(("since", .string(since))) }
            expectReply(
                V1Protocol.subscribed(channel: channel, offset: since, recovered: presence, ref: ref),
                type: "subscribed", ref: ref)
        case .unsubscribe(let channel):
            expect(ChannelName.problem(with: channel) == nil, "unsubscribe from a bad channel")
            members += [("type", .string("unsubscribe")), ("channel", .string(channel))]
            expectReply(
                V1Protocol.unsubscribed(channel: channel, ref: ref, reason: "fuzz"), type: "unsubscribed", ref: ref)
        case .publish(let channel, let payload):
            expect(ChannelName.problem(with: channel) == nil, "publish to a bad channel")
            members += [("type", .string("publish")), ("channel", .string(channel)), ("payload", .string(payload))]
            expectReply(V1Protocol.published(channel: channel, offset: "1:2", ref: ref), type: "published", ref: ref)
        case .refresh(let token):
            members += [("type", .string("refresh")), ("token", .string(token))]
            expectReply(
                V1Protocol.refreshed(exp: 1, claims: .object([("exp", .number("1"))]), ref: ref), type: "refreshed",
                ref: ref)
        case .presence(let channel):
            expect(ChannelName.problem(with: channel) == nil, "presence of a bad channel")
            members += [("type", .string("presence")), ("channel", .string(channel))]
        }
        var writer = JSONWriter()
        writer.value(.object(members))
        let again = V1Protocol.parse(writer.bytes)
        expect(again == V1Protocol.Frame(ref: ref, request: .success(request)), "written back: \(again)")
    }

    /// `frame` is one unmasked final text frame of a JSON object of `type`, echoing `ref`.
    static func expectReply(_ frame: ByteBuffer, type: String, ref: JSONValue?) {
        var frame = frame
        guard let first = frame.readInteger(as: UInt8.self), let second = frame.readInteger(as: UInt8.self) else {
            return expect(false, "no frame header")
        }
        expect(first == 0x81 && second & 0x80 == 0, "frame header \(first) \(second)")
        var length = Int(second & 0x7F)
        if length == 126 {
            length = Int(frame.readInteger(as: UInt16.self) ?? 0)
        } else if length == 127 {
            length = Int(frame.readInteger(as: UInt64.self) ?? 0)
        }
        expect(length == frame.readableBytes, "frame length \(length), payload \(frame.readableBytes)")
        let payload = frame.readBytes(length: frame.readableBytes) ?? []
        guard case .object? = try? JSONParser.parse(payload), let reply = try? JSONParser.parse(payload) else {
            return expect(false, "reply is not a JSON object")
        }
        expect(reply["type"] == .string(type), "reply type")
        expect(reply["ref"].map { $0.serialized } == ref.map { $0.serialized }, "reply does not echo ref")
    }
}
