import NIOCore
import NIOHTTP1

@testable import PostgresWebSockets

/// The request-head reader: `HTTPConnectionStateMachine` (reads split anywhere, size limit,
/// byte checks) with `RequestHead.parse`, and the handshake checks on what it parsed.
///
/// The first byte picks where the input is split into reads; the rest is what the client sends.
///
/// Properties:
/// - the outcome does not depend on how the bytes are split into reads (for heads within the
///   size limit; past it, both ways refuse);
/// - a parsed head holds a token method, an origin-form target of visible ASCII, HTTP/1.0 or
///   1.1, at most 100 fields whose names are tokens and whose values have no control
///   character and no leading or trailing blank;
/// - written out again, it parses to the same head;
/// - a refusal's reason is one printable line;
/// - an authorized handshake reads only valid channels, answers a 16-byte key, and selects a
///   subprotocol the client offered, never a bearer entry.
enum RequestHeadTarget {
    static let target = FuzzTarget(
        name: "requesthead", summary: "HTTPConnectionStateMachine, RequestHead.parse and Handshake", run: run)

    static let maxHeadBytes = 2048
    static let handshake = Handshake(verifier: JWTVerifier(keys: JWTTarget.keys), allowedOrigins: nil)

    enum Outcome: Equatable {
        case none
        case route(String)
        case refuse(Int, String)
        case close
    }

    static func run(_ data: UnsafeRawBufferPointer) {
        var input = FuzzInput(data)
        let seed = Int(input.byte())
        let bytes = input.rest()

        var whole = HTTPConnectionStateMachine<Void>(maxHeadBytes: maxHeadBytes)
        let wholeAction = whole.received(ByteBuffer(bytes: bytes))
        var split = HTTPConnectionStateMachine<Void>(maxHeadBytes: maxHeadBytes)
        var splitAction = HTTPConnectionStateMachine<Void>.ReadAction.none
        var offset = 0
        var step = 0
        repeat {
            let size = (seed * (step + 7) + step) % 23 + 1
            let end = min(bytes.count, offset + size)
            splitAction = split.received(ByteBuffer(bytes: bytes[offset..<end]))
            offset = end
            step += 1
        } while offset < bytes.count && isNone(splitAction)
        let (first, second) = (outcome(wholeAction), outcome(splitAction))
        if bytes.count <= maxHeadBytes {
            expect(first == second, "whole: \(first), in reads: \(second)")
        } else {
            expect(isRefusalOrNone(first) == isRefusalOrNone(second), "whole: \(first), in reads: \(second)")
        }

        switch wholeAction {
        case .refuse(let refusal):
            expect(isPrintableLine(refusal.reason), "reason \(refusal.reason.debugEscaped)")
        case .route(let head):
            check(head)
        case .none, .closeConnection:
            break
        }
    }

    static func isNone(_ action: HTTPConnectionStateMachine<Void>.ReadAction) -> Bool {
        if case .none = action { true } else { false }
    }

    static func isRefusalOrNone(_ outcome: Outcome) -> Bool {
        switch outcome {
        case .refuse, .none: true
        case .route, .close: false
        }
    }

    static func outcome(_ action: HTTPConnectionStateMachine<Void>.ReadAction) -> Outcome {
        switch action {
        case .none: .none
        case .route(let head): .route(describe(head))
        case .refuse(let refusal): .refuse(Int(refusal.status.code), refusal.reason)
        case .closeConnection: .close
        }
    }

    static func describe(_ head: RequestHead) -> String {
        var parts = [String(head.method), String(head.target), "\(head.minorVersion)"]
        for (name, value) in head.headers { parts += [String(name), String(value)] }
        return parts.map { $0.debugEscaped }.joined(separator: "|")
    }

    static func check(_ head: RequestHead) {
        let description = describe(head)
        expect(!head.method.isEmpty && head.method.utf8.allSatisfy(isToken), "method in \(description)")
        expect(
            head.target.hasPrefix("/") && head.target.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F },
            "target in \(description)")
        expect(head.minorVersion == 0 || head.minorVersion == 1, "version in \(description)")
        expect(head.headers.count <= RequestHead.maxHeaderCount, "\(head.headers.count) fields")
        for (name, value) in head.headers {
            expect(!name.isEmpty && name.utf8.allSatisfy(isToken), "field name in \(description)")
            expect(
                !value.utf8.contains { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }, "control character in \(description)")
            expect(
                value.utf8.first.map(isBlank) != true && value.utf8.last.map(isBlank) != true,
                "blank around a value in \(description)")
        }

        var text = "\(head.method) \(head.target) HTTP/1.\(head.minorVersion)\r\n"
        for (name, value) in head.headers { text += "\(name): \(value)\r\n" }
        text += "\r\n"
        let bytes = Array(text.utf8)
        let again: Result<RequestHead, Refusal> = bytes.withUnsafeBytes { buffer in
            do throws(Refusal) {
                return .success(try RequestHead.parse(buffer))
            } catch {
                return .failure(error)
            }
        }
        switch again {
        case .success(let again):
            expect(describe(again) == description, "written out and read again: \(describe(again)), was \(description)")
        case .failure(let error):
            expect(false, "written out, refused: \(error.reason) for \(description)")
        }

        switch handshake.authorize(head, now: 1_700_000_000) {
        case .success(let authorized):
            expect(
                authorized.readChannels.allSatisfy { ChannelName.problem(with: $0.name) == nil },
                "reads a bad channel")
            expect(Base64.decode(authorized.acceptKey)?.count == 20, "accept key \(authorized.acceptKey)")
            if let subprotocol = authorized.subprotocol {
                expect(
                    head.listValues("sec-websocket-protocol").contains { $0 == subprotocol }
                        && !subprotocol.hasPrefix(Handshake.bearerPrefix),
                    "selected \(subprotocol.debugEscaped)")
            }
        case .failure(let refusal):
            expect(isPrintableLine(refusal.reason), "reason \(refusal.reason.debugEscaped)")
        }
        _ = handshake.authorizeEventStream(head, now: 1_700_000_000)
    }

    static func isBlank(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }

    static func isToken(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        default: "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }
}
