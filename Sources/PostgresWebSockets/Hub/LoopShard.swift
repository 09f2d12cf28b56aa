import NIOCore

/// Everything one event loop knows about its sockets: who reads which channel, and the
/// timer that pings idle sockets and closes expired ones. Only ever touched on its loop,
/// so the broadcast path takes no lock.
final class LoopShard {
    let eventLoop: any EventLoop
    private var subscribers: [ChannelKey: SubscriberList] = [:]
    private var sessions: [ObjectIdentifier: WebSocketSession] = [:]
    private var pass = 0
    private var sweeper: RepeatedTask? = nil

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    var sessionCount: Int { sessions.count }

    func add(_ session: WebSocketSession) {
        sessions[ObjectIdentifier(session)] = session
        for channel in session.readChannels {
            let key = ChannelKey(channel)
            let list: SubscriberList
            if let existing = subscribers[key] {
                list = existing
            } else {
                list = SubscriberList()
                subscribers[key] = list
            }
            list.append(session)
        }
    }

    func remove(_ session: WebSocketSession) {
        sessions[ObjectIdentifier(session)] = nil
        for channel in session.readChannels {
            let key = ChannelKey(channel)
            guard let list = subscribers[key] else { continue }
            list.remove(session)
            if list.isEmpty { subscribers[key] = nil }
        }
    }

    /// Writes each notification to every reading socket of its channel, then flushes each
    /// touched socket once: one syscall per socket per batch, not per message.
    func deliver(_ batch: [Notification]) {
        pass &+= 1
        var touched: [SubscriberList] = []
        for notification in batch {
            guard let list = subscribers[ChannelKey(notification.channel)] else { continue }
            if list.lastPass != pass {
                list.lastPass = pass
                touched.append(list)
            }
            for session in list.sessions {
                session.deliver(notification.frame)
            }
        }
        for list in touched {
            for session in list.sessions {
                session.flushIfNeeded()
            }
        }
    }

    func startSweeping(every interval: TimeAmount) {
        let shard = NIOLoopBound(self, eventLoop: eventLoop)
        sweeper = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
            shard.value.sweep()
        }
    }

    func stopSweeping() {
        sweeper?.cancel()
        sweeper = nil
    }

    private func sweep() {
        let now = NIODeadline.now()
        let wallClock = DeliveryClock.now()
        for session in Array(sessions.values) {
            session.tick(now: now, wallClock: wallClock)
        }
    }

    func closeAll(code: UInt16, reason: String) {
        for session in Array(sessions.values) {
            session.close(code: code, reason: reason)
        }
    }

    func abortAll() {
        for session in Array(sessions.values) {
            session.abort()
        }
    }
}
