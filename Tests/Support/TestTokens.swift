import PostgresWebSockets

/// Mints HMAC-signed JWTs for tests and the benchmark.
public enum TestTokens {
    /// The secret of sample.conf and of the postgres-websockets README examples.
    public static let secret = "auwhfdnskjhewfi34uwehdlaehsfkuaeiskjnfduierhfsiweskjcnzeiluwhskdewishdnpwe"

    /// Signs `claimsJSON` (any text, valid JSON or not) with `header` as given.
    public static func mint(
        claimsJSON: String, headerJSON: String = #"{"alg":"HS256","typ":"JWT"}"#,
        algorithm: JWTAlgorithm = .hs256, secret: String = secret
    ) -> String {
        let signingInput = segment(headerJSON) + "." + segment(claimsJSON)
        let signature = algorithm.sign(key: Array(secret.utf8), message: signingInput)
        return signingInput + "." + Base64.encode(signature, urlSafe: true, padded: false)
    }

    /// A token with the usual claims. `exp`/`nbf` are seconds since 1970.
    public static func mint(
        mode: String?, channel: String? = nil, channels: [String]? = nil, exp: Double? = nil, nbf: Double? = nil,
        extra: [(String, JSONValue)] = [], algorithm: JWTAlgorithm = .hs256, secret: String = secret
    ) -> String {
        var members: [(key: String, value: JSONValue)] = []
        if let mode { members.append(("mode", .string(mode))) }
        if let channel { members.append(("channel", .string(channel))) }
        if let channels { members.append(("channels", .array(channels.map { .string($0) }))) }
        if let exp { members.append(("exp", .number(formatNumber(exp)))) }
        if let nbf { members.append(("nbf", .number(formatNumber(nbf)))) }
        for (key, value) in extra { members.append((key, value)) }
        return mint(
            claimsJSON: JSONValue.object(members).serialized,
            headerJSON: #"{"alg":"\#(algorithm.rawValue)","typ":"JWT"}"#, algorithm: algorithm, secret: secret)
    }

    public static func segment(_ text: String) -> String {
        Base64.encode(Array(text.utf8), urlSafe: true, padded: false)
    }

    private static func formatNumber(_ value: Double) -> String {
        value == value.rounded() ? String(Int64(value)) : String(value)
    }
}
