import NIOCore

/// The structured protocol `pgws.v1`: channels subscribed and left at will, publishes
/// confirmed after the commit, resume from an offset, token refresh, errors tied to `ref`.
extension WebSocketSession {
    func receivedRequest(_ message: ByteBuffer) {
        let frame = V1Protocol.parse(Array(message.readableBytesView))
        switch frame.request {
        case .failure(let failure):
            reply(V1Protocol.error(failure, ref: frame.ref))
        case .success(.subscribe(let channel, let since, let presence)):
            subscribe(channel, since: since, presence: presence, ref: frame.ref)
        case .success(.unsubscribe(let channel)):
            unsubscribe(channel, ref: frame.ref)
        case .success(.publish(let channel, let payload)):
            publish(channel, payload: payload, ref: frame.ref)
        case .success(.refresh(let token)):
            refresh(token, ref: frame.ref)
        case .success(.presence(let channel)):
            presence(of: channel, ref: frame.ref)
        }
    }

    // MARK: - Presence

    private func presence(of channel: String, ref: JSONValue?) {
        guard let presence = environment.presence else {
            return reply(V1Protocol.error(.init(.unavailable, "presence is not enabled on this server"), ref: ref))
        }
        // Who is on a channel is for those who may read it.
        guard grant.mode.contains(.read), grant.allows(channel) else {
            return reply(V1Protocol.error(.init(.forbidden, "channel not allowed by JWT"), ref: ref))
        }
        let handle = self.handle
        presence.members(of: channel) { result in
            let frame: ByteBuffer
            switch result {
            case .success(let members): frame = V1Protocol.presence(channel: channel, members: members, ref: ref)
            case .failure(let failure): frame = V1Protocol.error(.init(.unavailable, failure.reason), ref: ref)
            }
            handle.onLoop { session in
                guard session.machine.isOpen else { return }
                session.reply(frame)
            }
        }
    }

    /// Replies go through the shard, which writes them after what it still holds back.
    func reply(_ frame: ByteBuffer) {
        shard.send(frame, to: self)
    }

    func subscribedReply(channel: String, ref: JSONValue?, since: String?) -> (String?, Bool) -> ByteBuffer {
        { last, recovered in
            V1Protocol.subscribed(channel: channel, offset: last, recovered: since != nil && recovered, ref: ref)
        }
    }

    // MARK: - Subscriptions

    private func subscribe(_ channel: String, since: String?, presence: Bool = false, ref: JSONValue?) {
        guard grant.mode.contains(.read) else {
            return reply(V1Protocol.error(.init(.forbidden, "the token's mode does not read"), ref: ref))
        }
        guard grant.allows(channel) else {
            return reply(V1Protocol.error(.init(.forbidden, "channel not allowed by JWT"), ref: ref))
        }
        let key = ChannelKey(channel)
        if presence { watchesPresence.insert(key) } else { watchesPresence.remove(key) }
        switch channels[key] {
        case .reading?:
            subscribeNow(key, since: since, ref: ref)
        case .subscribing(var waiting, let then)?:
            waiting.append((ref, since))
            channels[key] = .subscribing(waiting, thenUnsubscribe: then)
        case nil:
            channels[key] = .subscribing([(ref, since)], thenUnsubscribe: (nil, false))
            let handle = self.handle
            shard.hold([key]) { handle.onLoop { $0.listening(key) } }
        }
    }

    /// PostgreSQL LISTENs on `key` (or the database is down): answer the subscriptions.
    private func listening(_ key: ChannelKey) {
        guard machine.isOpen, case .subscribing(let waiting, let then)? = channels[key] else { return }
        channels[key] = .reading
        for request in waiting {
            subscribeNow(key, since: request.since, ref: request.ref)
        }
        if then.asked { unsubscribe(key.name, ref: then.ref) }
    }

    private func subscribeNow(_ key: ChannelKey, since: String?, ref: JSONValue?) {
        shard.subscribe(
            self, to: key, since: since?[...], reply: subscribedReply(channel: key.name, ref: ref, since: since))
        shard.watchPresence(self, of: key, watchesPresence.contains(key))
    }

    private func unsubscribe(_ channel: String, ref: JSONValue?, reason: String? = nil) {
        let key = ChannelKey(channel)
        switch channels[key] {
        case .reading?:
            watchesPresence.remove(key)
            shard.unsubscribe(self, from: key)
            shard.release([key])
            channels[key] = nil
            reply(V1Protocol.unsubscribed(channel: channel, ref: ref, reason: reason))
        case .subscribing(let waiting, _)?:
            channels[key] = .subscribing(waiting, thenUnsubscribe: (ref, true))
        case nil:
            reply(V1Protocol.error(.init(.notFound, "not subscribed to \(JWTVerifier.printable(channel))"), ref: ref))
        }
    }

    // MARK: - Publishing

    private func publish(_ channel: String, payload: String, ref: JSONValue?) {
        let limits = environment.limits
        guard grant.mode.contains(.write) else {
            return reply(V1Protocol.error(.init(.forbidden, "the token's mode does not write"), ref: ref))
        }
        guard grant.allows(channel) else {
            return reply(V1Protocol.error(.init(.forbidden, "channel not allowed by JWT"), ref: ref))
        }
        guard payload.utf8.count <= limits.maxMessageSize else {
            return reply(
                V1Protocol.error(.init(.tooLarge, "payload exceeds \(limits.maxMessageSize) bytes"), ref: ref))
        }
        let envelope = Envelope.encode(
            event: .websocketMessage, channel: channel, payload: payload, claimsPrefix: claimsPrefix,
            deliveredAtMicroseconds: UniqueTimestamps.shared.next())
        let destination = destination(of: channel)
        guard envelope.count <= destination.maxEnvelope else {
            return reply(
                V1Protocol.error(
                    .init(.tooLarge, "the envelope exceeds PostgreSQL's \(destination.maxEnvelope)-byte limit"),
                    ref: ref))
        }
        let settings = environment.channels
        var notifications = [(destination.channel, envelope)]
        if let audit = settings.auditChannel { notifications.append((audit, envelope)) }
        var message = OutgoingMessage(
            notifications: notifications, sender: V1PublishHandle(handle: handle, channel: channel, ref: ref))
        message.confirms = true
        publish(message)
    }

    // MARK: - Refresh

    private func refresh(_ token: String, ref: JSONValue?) {
        let verified: VerifiedToken
        let now = WallClock.seconds()
        do {
            verified = try environment.keys.current.verifier.verify(Substring(token), now: now)
        } catch {
            if error.keyMiss == .unknownKid { environment.keys.unknownKeySeen() }
            return reply(V1Protocol.error(.init(.unauthorized, error.reason), ref: ref))
        }
        if environment.revocations.isRevoked(verified.claims, now: now) {
            return reply(V1Protocol.error(.init(.unauthorized, "token revoked"), ref: ref))
        }
        let newGrant: Grant
        do {
            newGrant = try Grant.authorize(claims: verified.claims, requestedChannel: nil, openNothing: true)
        } catch {
            return reply(V1Protocol.error(.init(.forbidden, error.reason), ref: ref))
        }
        grant = Grant(mode: newGrant.mode, channels: grant.channels, claimedChannels: newGrant.claimedChannels)
        claimsPrefix = Envelope.claimsPrefix(verified.claims)
        machine.tokenRefreshed(expiresAt: verified.expiresAt)
        for key in Array(channels.keys) where !(grant.mode.contains(.read) && grant.allows(key.name)) {
            if case .subscribing(let waiting, _)? = channels[key] {
                channels[key] = .subscribing(waiting, thenUnsubscribe: (nil, true))
                continue
            }
            unsubscribe(key.name, ref: nil, reason: "the refreshed token does not grant it")
        }
        reply(V1Protocol.refreshed(exp: verified.expiresAt, claims: verified.claims, ref: ref))
    }
}

/// A `pgws.v1` publish, as the notifier reports it back: `published` after the commit, an
/// `error` when PostgreSQL refused it or the queue could not take it.
final class V1PublishHandle: MessageSender {
    let handle: SessionHandle
    let channel: String
    let ref: JSONValue?

    init(handle: SessionHandle, channel: String, ref: JSONValue?) {
        self.handle = handle
        self.channel = channel
        self.ref = ref
    }

    func messageCommitted(offset: UInt64?) {
        let (channel, ref) = (self.channel, self.ref)
        handle.onLoop { $0.reply(V1Protocol.published(channel: channel, offset: offset.map { "\($0)" }, ref: ref)) }
    }

    func messageRejected(reason: String) {
        let ref = self.ref
        handle.onLoop {
            $0.reply(V1Protocol.error(.init(.badRequest, "rejected by PostgreSQL: \(reason)"), ref: ref))
        }
    }

    /// The database is down and the queue towards it full.
    func notTaken() {
        let ref = self.ref
        handle.onLoop {
            $0.reply(
                V1Protocol.error(
                    .init(.unavailable, "the database is unreachable and the queue towards it is full"), ref: ref))
        }
    }
}
