/// What the listener's connection does for durable channels besides the registry's
/// LISTEN/UNLISTEN round trips.
enum DurableCommand {
    /// LISTEN on the signal channels of these held channels, which became durable; each
    /// stream starts after the given offset (the newest one when it was made durable), or,
    /// for `UInt64.max`, after the newest one the next `baseline` reads.
    case follow([ChannelKey: UInt64])
    /// UNLISTEN on the signal channels of these channels, made ephemeral.
    case unfollow([ChannelKey])
    /// Read the newest offset of these followed channels (after their signal channels were
    /// LISTENed), then report the registry's round trip as done when `completesSync`.
    case baseline([ChannelKey], completesSync: Bool)
    /// Read a followed channel's messages after `after`, up to `through`.
    case read(ChannelKey, after: UInt64, through: UInt64)
}

extension ListenerLoop {
    /// Rows a catch-up read takes per round trip.
    static var readPageRows: Int { 1000 }

    /// On a new connection, before anything else: the schema (installed or checked), then
    /// the control channel LISTENed before the durable channels are read, so that no change
    /// falls between the two.
    mutating func prepareDurable(_ conn: PGConnection) -> Result<Void, DurableSchema.Failure> {
        let loaded = DurableSchema.prepare(conn, mode: listener.durableMode).flatMap {
            () -> Result<Set<ChannelKey>, DurableSchema.Failure> in
            guard let quoted = conn.quoteIdentifier(DurableSchema.controlChannel) else {
                return .failure(.init(isFatal: false, message: conn.errorMessage))
            }
            return conn.execute("LISTEN \(quoted)")
                .flatMap { _ in conn.execute("SELECT name FROM pgws.channels") }
                .mapError { .init(isFatal: false, message: "reading the durable channels: \($0)") }
                .map { rows in
                    var durable = Set<ChannelKey>()
                    for row in rows { if let name = row.first ?? nil { durable.insert(ChannelKey(name)) } }
                    return durable
                }
        }
        return loaded.map {
            streams.loaded($0)
            listener.directory.replace(with: $0)
        }
    }

    mutating func startDurableCommand(_ command: DurableCommand, _ conn: PGConnection) {
        switch command {
        case .follow(let channels):
            sendChannelStatements(conn, "LISTEN", channels.keys.map(DurableStreams.signalChannel), as: command)
        case .unfollow(let channels):
            for channel in channels where streams.isFollowed(channel) { deliver(streams.stopFollowing(channel)) }
            sendChannelStatements(conn, "UNLISTEN", channels.map(DurableStreams.signalChannel), as: command)
        case .baseline(let channels, _):
            send(
                conn,
                "SELECT c.name, pgws.newest_offset(c.name) FROM pgws.channels AS c WHERE c.name = ANY($1::text[])",
                parameters: [Self.textArray(channels.map(\.name))], as: .durable(command, rows: []))
        case .read(let channel, let after, let through):
            send(
                conn,
                "SELECT \"offset\", payload FROM pgws.messages WHERE channel = $1 AND \"offset\" > $2 "
                    + "AND \"offset\" <= $3 ORDER BY \"offset\" LIMIT \(Self.readPageRows)",
                parameters: [channel.name, "\(after)", "\(through)"], as: .durable(command, rows: []))
        }
    }

    private mutating func sendChannelStatements(
        _ conn: PGConnection, _ verb: String, _ names: [String], as command: DurableCommand
    ) {
        var sql = ""
        for name in names {
            guard let quoted = conn.quoteIdentifier(name) else { return }
            sql += "\(verb) \(quoted);"
        }
        send(conn, sql, as: .durable(command, rows: []))
    }

    /// The registry's round trip is answered. Its durable channels are followed from the
    /// newest offset read next; only then may their sockets open.
    mutating func finishSync(_ sync: ListenStateMachine<ListenRegistry.Ready>.Sync, following: [ChannelKey]) {
        for channel in following { streams.startFollowing(channel) }
        // Made durable while the round trip was on the wire: their signals are LISTENed first.
        let missed = sync.listen.filter { streams.durable.contains($0) && !streams.isFollowed($0) }
        if following.isEmpty && missed.isEmpty {
            registry.syncSucceeded(received: listener.sink.received)
            return
        }
        var next: [DurableCommand] = []
        if !missed.isEmpty { next.append(.follow(Dictionary(uniqueKeysWithValues: missed.map { ($0, UInt64.max) }))) }
        next.append(.baseline(following + missed, completesSync: true))
        durableCommands.insert(contentsOf: next, at: 0)
    }

    mutating func finishDurableCommand(_ command: DurableCommand, rows: [[String?]]) {
        switch command {
        case .follow(let channels):
            var resumed: [ChannelKey] = []
            for (channel, from) in channels {
                streams.startFollowing(channel)
                // UInt64.max: no offset known; the baseline read that follows sets it.
                guard from != .max else { continue }
                deliver(streams.resume(channel, after: from))
                resumed.append(channel)
            }
            // What was published between the change and the LISTEN comes from the table.
            if !resumed.isEmpty { durableCommands.insert(.baseline(resumed, completesSync: false), at: 0) }
        case .unfollow:
            break
        case .baseline(let channels, let completesSync):
            var newest: [ChannelKey: UInt64] = [:]
            for row in rows {
                if let name = row[0], let offset = row[1].flatMap({ UInt64($0) }) { newest[ChannelKey(name)] = offset }
            }
            var gone: [ChannelKey] = []
            for channel in channels {
                if let offset = newest[channel] {
                    deliver(streams.baseline(channel, newest: offset))
                } else if streams.isFollowed(channel) {
                    gone.append(channel)  // made ephemeral meanwhile
                }
            }
            if !gone.isEmpty { durableCommands.insert(.unfollow(gone), at: 0) }
            if completesSync { registry.syncSucceeded(received: listener.sink.received) }
        case .read(let channel, _, _):
            var read: [(offset: UInt64, payload: [UInt8])] = []
            for row in rows {
                guard let offset = row[0].flatMap({ UInt64($0) }), let payload = row[1] else { continue }
                read.append((offset, Array(payload.utf8)))
            }
            deliver(streams.read(channel, rows: read, complete: rows.count < Self.readPageRows))
        }
    }

    /// A notification on a `pgws:` channel: a control signal or a followed channel's message.
    mutating func durableSignal(
        _ channel: UnsafeRawBufferPointer, _ payload: UnsafeRawBufferPointer, into batch: inout Sink.Batch
    ) {
        if channel.elementsEqual(DurableStreams.controlChannelBytes) {
            guard let change = streams.controlSignal(String(decoding: payload, as: UTF8.self)) else { return }
            listener.directory.replace(with: streams.durable)
            if change.isDurable {
                if !streams.isFollowed(change.channel), registry.listenedSince(change.channel) != nil {
                    durableCommands.append(.follow([change.channel: change.last]))
                }
            } else if streams.isFollowed(change.channel) {
                // In the notification order: what follows this signal is not durable.
                apply(streams.stopFollowing(change.channel), to: &batch)
                durableCommands.append(.unfollow([change.channel]))
            }
            return
        }
        guard let key = streams.channel(ofSignal: channel) else { return }
        apply(streams.signal(key, payload), to: &batch)
    }

    /// Hands `outputs` on in a batch of their own.
    mutating func deliver(_ outputs: [DurableStreams.Output]) {
        guard !outputs.isEmpty else { return }
        var batch = listener.sink.makeBatch()
        apply(outputs, to: &batch)
        if batch.count > 0 { listener.deliver(batch) }
    }

    private mutating func apply(_ outputs: [DurableStreams.Output], to batch: inout Sink.Batch) {
        for output in outputs {
            switch output {
            case .message(let channel, let offset, let payload):
                payload.withUnsafeBytes { batch.append(durable: channel, offset: offset, payload: $0) }
            case .durability(let channel, let isDurable, let last):
                batch.append(durability: channel, isDurable: isDurable, last: last)
            case .read(let channel, let after, let through):
                durableCommands.append(.read(channel, after: after, through: through))
            }
        }
    }

    /// A `text[]` literal in PostgreSQL's array syntax, every element quoted.
    static func textArray(_ elements: [String]) -> String {
        var text = "{"
        for (index, element) in elements.enumerated() {
            if index > 0 { text += "," }
            text += "\""
            for character in element.unicodeScalars {
                if character == "\"" || character == "\\" { text += "\\" }
                text.unicodeScalars.append(character)
            }
            text += "\""
        }
        return text + "}"
    }
}
