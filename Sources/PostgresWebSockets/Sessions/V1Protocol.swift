import NIOCore

/// The structured protocol `pgws.v1` (PROTOCOL.md): its client requests, parsed strictly, and
/// the frames the server answers with. Pure: the session carries them out.
enum V1Protocol {
    static let name = "pgws.v1"

    /// A client frame may be this much larger than `max-message-size` (the payload's limit).
    static let frameAllowance = 4096

    enum Request: Equatable {
        case subscribe(channel: String, since: String?, presence: Bool)
        case unsubscribe(channel: String)
        case publish(channel: String, payload: String)
        case refresh(token: String)
        case presence(channel: String)
    }

    /// The `code` of an `error` frame.
    enum ErrorCode: String {
        case badRequest = "bad_request"
        case unauthorized
        case forbidden
        case notFound = "not_found"
        case tooLarge = "too_large"
        case unavailable
        case rateLimited = "rate_limited"
    }

    struct Failure: Error, Equatable {
        let code: ErrorCode
        let reason: String
        init(_ code: ErrorCode, _ reason: String) {
            self.code = code
            self.reason = reason
        }
    }

    /// A client frame: its `ref` (a string or a number, echoed unchanged; nil when missing or
    /// invalid) and what it asks, or why it cannot be done.
    struct Frame: Equatable {
        let ref: JSONValue?
        let request: Result<Request, Failure>
    }

    static func parse(_ bytes: [UInt8]) -> Frame {
        guard case .object(let members)? = try? JSONParser.parse(bytes) else {
            return Frame(ref: nil, request: .failure(Failure(.badRequest, "the frame is not a JSON object")))
        }
        let object = JSONValue.object(members)
        var ref: JSONValue? = nil
        switch object["ref"] {
        case nil: break
        case .string?, .number?: ref = object["ref"]
        default: return Frame(ref: nil, request: .failure(Failure(.badRequest, "ref must be a string or a number")))
        }
        return Frame(ref: ref, request: request(object))
    }

    private static func request(_ object: JSONValue) -> Result<Request, Failure> {
        guard let type = object["type"] else { return .failure(Failure(.badRequest, "type is missing")) }
        guard let typeName = type.stringValue else { return .failure(Failure(.badRequest, "type must be a string")) }
        do {
            switch typeName {
            case "subscribe":
                let since: String?
                switch object["since"] {
                case nil, .null?: since = nil
                case .string(let text)?:
                    guard isOffset(text) else { throw Failure(.badRequest, "since is not an offset") }
                    since = text
                default: throw Failure(.badRequest, "since must be a string")
                }
                let presence: Bool
                switch object["presence"] {
                case nil: presence = false
                case .bool(let value)?: presence = value
                default: throw Failure(.badRequest, "presence must be true or false")
                }
                return .success(.subscribe(channel: try channel(object), since: since, presence: presence))
            case "unsubscribe":
                return .success(.unsubscribe(channel: try channel(object)))
            case "publish":
                let channel = try channel(object)
                guard let payload = object["payload"] else { throw Failure(.badRequest, "payload is missing") }
                guard let text = payload.stringValue else { throw Failure(.badRequest, "payload must be a string") }
                return .success(.publish(channel: channel, payload: text))
            case "refresh":
                guard let token = object["token"]?.stringValue else {
                    throw Failure(.badRequest, "token must be a string")
                }
                return .success(.refresh(token: token))
            case "presence":
                return .success(.presence(channel: try channel(object)))
            default:
                return .failure(Failure(.badRequest, "unknown type \(JWTVerifier.printable(typeName))"))
            }
        } catch let failure as Failure {
            return .failure(failure)
        } catch {
            return .failure(Failure(.badRequest, "\(error)"))
        }
    }

    private static func channel(_ object: JSONValue) throws -> String {
        guard let value = object["channel"] else { throw Failure(.badRequest, "channel is missing") }
        guard let name = value.stringValue else { throw Failure(.badRequest, "channel must be a string") }
        if let problem = ChannelName.problem(with: name) { throw Failure(.badRequest, "bad channel name: \(problem)") }
        return name
    }

    /// PROTOCOL.md: an offset is a string of `A-Z a-z 0-9 : . _ -`.
    static func isOffset(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 128
            && text.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: ":"), UInt8(ascii: "."), UInt8(ascii: "_"),
                    UInt8(ascii: "-"):
                    true
                default: false
                }
            }
    }

    // MARK: - Server frames

    static func subscribed(channel: String, offset: String?, recovered: Bool, ref: JSONValue?) -> ByteBuffer {
        reply(
            "subscribed", ref: ref,
            [
                ("channel", .string(channel)), ("offset", offset.map(JSONValue.string) ?? .null),
                ("recovered", .bool(recovered)),
            ])
    }

    static func unsubscribed(channel: String, ref: JSONValue?, reason: String? = nil) -> ByteBuffer {
        reply(
            "unsubscribed", ref: ref, [("channel", .string(channel))] + (reason.map { [("reason", .string($0))] } ?? [])
        )
    }

    static func published(channel: String, offset: String?, ref: JSONValue?) -> ByteBuffer {
        reply("published", ref: ref, [("channel", .string(channel))] + (offset.map { [("offset", .string($0))] } ?? []))
    }

    static func refreshed(exp: Double?, claims: JSONValue, ref: JSONValue?) -> ByteBuffer {
        // The exp claim as the token wrote it, so a client sees the very number it sent.
        reply("refreshed", ref: ref, [("exp", exp == nil ? .null : claims["exp"] ?? .null)])
    }

    static func presence(channel: String, members: [JSONValue], ref: JSONValue?) -> ByteBuffer {
        reply("presence", ref: ref, [("channel", .string(channel)), ("members", .array(members))])
    }

    static func error(_ failure: Failure, ref: JSONValue?) -> ByteBuffer {
        reply("error", ref: ref, [("code", .string(failure.code.rawValue)), ("reason", .string(failure.reason))])
    }

    private static func reply(_ type: String, ref: JSONValue?, _ fields: [(String, JSONValue)]) -> ByteBuffer {
        var members: [(key: String, value: JSONValue)] = [("type", .string(type))]
        if let ref { members.append(("ref", ref)) }
        for (key, value) in fields { members.append((key, value)) }
        var writer = JSONWriter(capacity: 128)
        writer.value(.object(members))
        return MessageFrames.textFrame(writer.bytes)
    }
}
