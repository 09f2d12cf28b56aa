import Logging
import NIOCore

extension Configuration {
    /// Builds the configuration from an optional config file and the environment.
    /// Environment variables override the file. Every error names the key and where it came from.
    public static func load(file: ConfigurationFile?, environment: [String: String]) throws(ConfigurationError)
        -> Configuration
    {
        var settings = Settings()
        if let file {
            for (key, entry) in file.entries {
                settings.values[key] = (entry.value, "\(file.path):\(entry.line): \(key.rawValue)")
            }
        }
        for key in ConfigurationKey.allCases {
            if let value = environment[key.environmentVariable], !value.isEmpty {
                settings.values[key] = (value, key.environmentVariable)
            }
        }
        return try settings.build()
    }

    public static func load(path: String?, environment: [String: String]) throws(ConfigurationError) -> Configuration {
        var file: ConfigurationFile? = nil
        if let path {
            let bytes = try readWholeFile(path).get()
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw ConfigurationError("\(path) is not valid UTF-8")
            }
            file = try ConfigurationFile(path: path, contents: text, environment: environment)
        }
        return try load(file: file, environment: environment)
    }
}

/// Raw setting values with their origin, turned into typed values with one error per problem.
private struct Settings {
    var values: [ConfigurationKey: (value: String, origin: String)] = [:]

    func build() throws(ConfigurationError) -> Configuration {
        guard let uri = try fileOrValue(.databaseURI) else {
            throw missing(.databaseURI)
        }
        let databaseURI = String(uri.trimming(where: isASCIIWhitespace))
        guard !databaseURI.isEmpty else { throw ConfigurationError("\(origin(.databaseURI)) is empty") }

        let secret = try jwtSecret()
        let jwks = try jwksSettings()
        guard secret != nil || jwks != nil else {
            throw ConfigurationError(
                "\(ConfigurationKey.jwtSecret.rawValue) or \(ConfigurationKey.jwksURL.rawValue) is required: set one "
                    + "or both in the config file or in \(ConfigurationKey.jwtSecret.environmentVariable) / "
                    + "\(ConfigurationKey.jwksURL.environmentVariable)")
        }

        var config = Configuration(databaseURI: databaseURI, jwtSecret: secret)
        config.jwks = jwks
        if let audience = values[.jwtAudience]?.value {
            guard !audience.isEmpty else { throw ConfigurationError("\(origin(.jwtAudience)) is empty") }
            config.jwtAudience = audience
        }
        if let host = values[.host]?.value { config.server.host = host }
        if let port = try int(.port, in: 0...65535) { config.server.port = port }
        if let root = values[.rootPath]?.value { config.server.rootPath = root }
        if let list = values[.allowedOrigins]?.value {
            let origins = list.split(separator: ",").map { String($0.trimming()) }.filter { !$0.isEmpty }
            config.server.allowedOrigins = origins.isEmpty ? nil : origins
        }
        if let listen = try channel(.listenChannel) { config.channels.listenChannel = listen }
        if let target = values[.publishTo]?.value {
            guard let parsed = ChannelSettings.PublishTarget(rawValue: target) else {
                throw invalid(.publishTo, "must be channel or listen-channel")
            }
            config.channels.publishTo = parsed
        }
        config.tls = try tls()
        config.channels.auditChannel = try channel(.auditChannel)
        config.channels.metaChannel = try channel(.metaChannel)
        if let n = try int(.poolSize, in: 1...64) { config.notifier.poolSize = n }
        if let n = try int(.retries, in: 1...1_000_000) { config.listener.startupAttempts = n }
        if values[.checkListenerInterval] != nil {
            _ = try int(.checkListenerInterval, in: 0...86_400_000)
            config.notices.append(
                "\(origin(.checkListenerInterval)) is accepted for compatibility and has no effect: the listener's connection is checked continuously (probed after 250 ms of silence)"
            )
        }
        if let n = try int(.maxPendingMessages, in: 1...10_000_000) { config.notifier.maxPendingMessages = n }
        if let n = try int(.maxSocketBuffer, in: 1024...(1 << 30)) { config.limits.maxSocketBuffer = n }
        if let n = try int(.maxLag, in: (1 << 20)...(1 << 40)) { config.limits.maxLag = n }
        if let t = try seconds(.maxLagSeconds) { config.limits.maxLagDuration = t }
        if let n = try int(.maxMessageSize, in: 1...Limits.maxDurablePayload) { config.limits.maxMessageSize = n }
        if let mode = values[.durable]?.value {
            guard let parsed = DurableSchema.Mode(rawValue: mode.lowercased()) else {
                throw invalid(.durable, "must be off, on or check")
            }
            config.durable.mode = parsed
        }
        if let mode = values[.presence]?.value {
            switch mode.lowercased() {
            case "on", "true": config.presence.isEnabled = true
            case "off", "false": config.presence.isEnabled = false
            default: throw invalid(.presence, "must be on or off")
            }
        }
        if let claim = values[.presenceClaim]?.value {
            guard !claim.isEmpty else { throw invalid(.presenceClaim, "must not be empty") }
            config.presence.claim = claim
        }
        if let fields = values[.presenceFields]?.value {
            config.presence.fields = fields.split(separator: ",").map { String($0.trimming(where: isASCIIWhitespace)) }
                .filter { !$0.isEmpty }
        }
        if let n = try int(.maxConnections, in: 1...10_000_000) { config.limits.maxConnections = n }
        if let t = try seconds(.handshakeTimeout) { config.limits.handshakeTimeout = t }
        if let t = try seconds(.listenerTimeout) { config.listener.probeTimeout = .nanoseconds(t.nanoseconds) }
        if let n = try int(.maxHeaderSize, in: 1024...(1 << 20)) { config.limits.maxHeaderSize = n }
        if let t = try seconds(.pingInterval) { config.limits.pingInterval = t }
        if let t = try seconds(.pongTimeout) { config.limits.pongTimeout = t }
        if let level = values[.logLevel]?.value {
            guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
                throw invalid(.logLevel, "must be one of trace, debug, info, notice, warning, error, critical")
            }
            config.logLevel = parsed
        }
        if let n = try int(.metricsPort, in: 1...65535) { config.metrics.port = n }
        if let host = values[.metricsHost]?.value {
            guard !host.isEmpty else { throw invalid(.metricsHost, "must not be empty") }
            config.metrics.host = host
        }
        if let format = values[.logFormat]?.value {
            guard let parsed = LogFormat(rawValue: format.lowercased()) else {
                throw invalid(.logFormat, "must be text or json")
            }
            config.logFormat = parsed
        }
        return config
    }

    /// The secret's bytes, or nil when it is not set.
    private func jwtSecret() throws(ConfigurationError) -> [UInt8]? {
        guard var secret = try fileOrValue(.jwtSecret) else { return nil }
        if values[.jwtSecret]?.value.hasPrefix("@") == true, secret.hasSuffix("\n") || secret.hasSuffix("\r\n") {
            secret.removeLast()  // a file saved by an editor ends in a newline that is not part of the key
        }
        var secretBytes = Array(secret.utf8)
        if try bool(.secretIsBase64) ?? false {
            guard let decoded = Base64.decode(String(secret.trimming(where: isASCIIWhitespace))) else {
                throw ConfigurationError("\(origin(.jwtSecret)) is not valid base64 although secret-is-base64 is true")
            }
            secretBytes = decoded
        }
        guard !secretBytes.isEmpty else { throw ConfigurationError("\(origin(.jwtSecret)) is empty") }
        return secretBytes
    }

    private func jwksSettings() throws(ConfigurationError) -> JWKSSettings? {
        guard let url = values[.jwksURL]?.value else {
            if values[.jwksCAFile] != nil {
                throw ConfigurationError(
                    "\(origin(.jwksCAFile)) is set but \(ConfigurationKey.jwksURL.rawValue) is not")
            }
            return nil
        }
        let trimmed = String(url.trimming(where: isASCIIWhitespace))
        if let problem = JWKSURL.problem(with: trimmed) { throw invalid(.jwksURL, problem) }
        var settings = JWKSSettings(url: trimmed)
        if let caFile = values[.jwksCAFile]?.value {
            guard !caFile.isEmpty else { throw ConfigurationError("\(origin(.jwksCAFile)) is empty") }
            settings.caFile = caFile
        }
        return settings
    }

    private func origin(_ key: ConfigurationKey) -> String {
        values[key]?.origin ?? key.rawValue
    }

    private func missing(_ key: ConfigurationKey) -> ConfigurationError {
        ConfigurationError("\(key.rawValue) is required: set it in the config file or in \(key.environmentVariable)")
    }

    private func invalid(_ key: ConfigurationKey, _ rule: String) -> ConfigurationError {
        if key.isSecret { return ConfigurationError("\(origin(key)) \(rule)") }
        return ConfigurationError("\(origin(key)) \(rule), got '\(ConfigurationFile.quoted(values[key]?.value ?? ""))'")
    }

    /// A value, or the contents of the file it names with `@path`.
    private func fileOrValue(_ key: ConfigurationKey) throws(ConfigurationError) -> String? {
        guard let value = values[key]?.value else { return nil }
        guard value.hasPrefix("@") else { return value }
        let bytes: [UInt8]
        switch readWholeFile(String(value.dropFirst())) {
        case .success(let b): bytes = b
        case .failure(let error): throw ConfigurationError("\(origin(key)): \(ConfigurationFile.quoted(error.message))")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ConfigurationError(
                "\(origin(key)): \(ConfigurationFile.quoted(value.dropFirst())) is not valid UTF-8")
        }
        return text
    }

    private func bool(_ key: ConfigurationKey) throws(ConfigurationError) -> Bool? {
        guard let value = values[key]?.value else { return nil }
        switch value {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default: throw invalid(key, "must be true or false")
        }
    }

    private func int(_ key: ConfigurationKey, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int? {
        guard let value = values[key]?.value else { return nil }
        guard let number = Int(value), range.contains(number) else {
            throw invalid(key, "must be a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    private func seconds(_ key: ConfigurationKey) throws(ConfigurationError) -> TimeAmount? {
        guard let value = values[key]?.value else { return nil }
        guard let number = Double(value), number.isFinite, number > 0, number <= 86_400 else {
            throw invalid(key, "must be a number of seconds above 0 and at most 86400")
        }
        return .fromSeconds(number)
    }

    /// Both files or neither: a certificate without its key (or the reverse) is a mistake,
    /// not a request for plain HTTP. The files themselves are read when the server starts.
    private func tls() throws(ConfigurationError) -> TLSSettings? {
        let certificate = try path(.certificateFile)
        let key = try path(.keyFile)
        if let certificate, let key { return TLSSettings(certificateFile: certificate, keyFile: key) }
        if certificate == nil, key == nil { return nil }
        let given = certificate == nil ? ConfigurationKey.keyFile : .certificateFile
        let names =
            "\(ConfigurationKey.certificateFile.rawValue) (\(ConfigurationKey.certificateFile.environmentVariable))"
            + " and \(ConfigurationKey.keyFile.rawValue) (\(ConfigurationKey.keyFile.environmentVariable))"
        throw ConfigurationError("\(names) go together: set both for TLS or neither; only \(origin(given)) is set")
    }

    private func path(_ key: ConfigurationKey) throws(ConfigurationError) -> String? {
        guard let value = values[key]?.value else { return nil }
        guard !value.trimming(where: isASCIIWhitespace).isEmpty else {
            throw ConfigurationError("\(origin(key)) is empty")
        }
        return value
    }

    private func channel(_ key: ConfigurationKey) throws(ConfigurationError) -> String? {
        guard let name = values[key]?.value else { return nil }
        if let problem = ChannelName.problem(with: name) { throw invalid(key, "is not a channel name (\(problem))") }
        return name
    }
}
