/// What an accepted socket may do: the outcome of authorization.
public struct Grant: Sendable, Equatable {
    public struct Mode: OptionSet, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let read = Mode(rawValue: 1)
        public static let write = Mode(rawValue: 2)

        /// The claim's spelling: `r`, `w` or `rw`.
        public var description: String {
            switch (contains(.read), contains(.write)) {
            case (true, true): "rw"
            case (true, false): "r"
            case (false, true): "w"
            case (false, false): "-"
            }
        }

        init?(claim: String) {
            switch claim {
            case "r": self = .read
            case "w": self = .write
            case "rw": self = [.read, .write]
            default: return nil
            }
        }
    }

    public let mode: Mode
    /// The channels the socket opens with: distinct names, in the order the token (or URL)
    /// named them.
    public let channels: [String]
    /// The channels the token claims (`channel` and `channels`); empty: any channel.
    public let claimedChannels: [String]

    /// Whether the token lets the socket use `channel` (subscribe or publish, with its mode).
    func allows(_ channel: String) -> Bool {
        claimedChannels.isEmpty || claimedChannels.contains { ChannelKey($0) == ChannelKey(channel) }
    }

    /// The channels as one comma-separated list, as meta events and logs show them.
    var channelList: String { channels.joined(separator: ",") }
}

/// Why an authenticated socket is refused. Answered with HTTP 403 at the handshake.
public struct AuthorizationError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}

extension Grant {
    /// Applies the claim rules of postgres-websockets to a verified token.
    ///
    /// - `mode` must be `r`, `w` or `rw`.
    /// - `channel` (a string) and `channels` (an array of strings) are merged.
    /// - Without a requested channel the socket gets every claimed one, and must have one.
    /// - With a requested channel, the token must claim it, unless it claims none at all.
    /// - Parameter openNothing: `pgws.v1` at `/` with the token in a header: the socket
    ///   subscribes itself later, so it opens with no channel whatever the token claims.
    public static func authorize(claims: JSONValue, requestedChannel: String?, openNothing: Bool = false)
        throws(AuthorizationError) -> Grant
    {
        guard let modeClaim = claims["mode"] else { throw AuthorizationError(reason: "JWT has no mode claim") }
        guard let modeText = modeClaim.stringValue, let mode = Mode(claim: modeText) else {
            throw AuthorizationError(reason: "JWT mode claim must be \"r\", \"w\" or \"rw\"")
        }

        var claimed: [String] = []
        switch claims["channel"] {
        case nil, .null?: break
        case .string(let name)?: claimed.append(name)
        default: throw AuthorizationError(reason: "JWT channel claim must be a string")
        }
        switch claims["channels"] {
        case nil, .null?: break
        case .array(let names)?:
            for name in names {
                guard case .string(let text) = name else {
                    throw AuthorizationError(reason: "JWT channels claim must be an array of strings")
                }
                claimed.append(text)
            }
        default: throw AuthorizationError(reason: "JWT channels claim must be an array of strings")
        }
        var seen = Set<ChannelKey>()
        claimed = claimed.filter { seen.insert(ChannelKey($0)).inserted }
        for name in claimed {
            if let problem = ChannelName.problem(with: name) {
                throw AuthorizationError(reason: "bad channel name in JWT: \(problem)")
            }
        }

        let channels: [String]
        if let requested = requestedChannel {
            if let problem = ChannelName.problem(with: requested) {
                throw AuthorizationError(reason: "bad channel name: \(problem)")
            }
            guard claimed.isEmpty || seen.contains(ChannelKey(requested)) else {
                throw AuthorizationError(reason: "channel not allowed by JWT")
            }
            channels = [requested]
        } else if openNothing {
            channels = []
        } else {
            guard !claimed.isEmpty else { throw AuthorizationError(reason: "JWT claims no channel") }
            channels = claimed
        }
        return Grant(mode: mode, channels: channels, claimedChannels: claimed)
    }
}
