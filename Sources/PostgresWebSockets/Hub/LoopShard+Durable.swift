import Logging
import NIOCore
import NIOWebSocket

/// Durable channels on one loop: their `pgws.v1` and SSE readers get stored messages only,
/// each once, by offset; a resume from further back than the log reaches, or a reader that
/// fell out of the log's window, is served from the table and handed back to the log.
extension LoopShard {
    func isDurable(_ key: ChannelKey) -> Bool { durable[key] != nil }

    /// A durability change reached this loop in the notification order.
    func durabilityChanged(_ key: ChannelKey, isDurable: Bool, last: UInt64) {
        if isDurable {
            durable[key] = max(durable[key] ?? 0, last)
        } else {
            durable[key] = nil
        }
        guard let list = channels[key] else { return }
        list.isDurable = isDurable
        guard !isDurable else { return }
        // Nothing more comes from the table: readers that were catching up go on live.
        for record in list.records {
            guard let read = record.tableReads.removeValue(forKey: ObjectIdentifier(list)) else { continue }
            if let reply = read.reply { send(reply(nil, false), to: record) }
        }
    }

    /// A structured reader subscribes to a durable channel, after `since` (a durable offset)
    /// when given: from the log when it still holds the next message, else from the table.
    func subscribeDurable(
        _ record: MemberRecord, to list: SubscriberList, since: Substring?,
        preface: ((Bool) -> ByteBuffer?)?, reply: ((String?, Bool) -> ByteBuffer)?
    ) {
        let newest = durable[list.channel] ?? 0
        startReading(record, list)
        let key = ObjectIdentifier(list)
        guard let since else {
            record.cursors[key] = newest
            if let reply { send(reply(newest == 0 ? nil : "\(newest)", false), to: record) }
            return
        }
        guard let offset = UInt64(since), since.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            // Not an offset of this channel's table (one from before it was durable, say).
            record.cursors[key] = newest
            if let frame = preface?(false) { record.member.deliverReply(frame) }
            if let reply { send(reply(newest == 0 ? nil : "\(newest)", false), to: record) }
            return
        }
        record.cursors[key] = offset
        if offset >= newest {
            // Nothing missed (or the client is ahead of this server: it skips what it has).
            if let frame = preface?(true) { record.member.deliverReply(frame) }
            if let reply { send(reply("\(max(offset, newest))", true), to: record) }
            return
        }
        if let start = firstLogSequence(of: list.channel, after: offset), log.entry(start)?.durableOffset == offset + 1
        {
            if let frame = preface?(true) { record.member.deliverReply(frame) }
            replay(record, list, from: start, boundary: log.next, then: reply?("\(newest)", true))
            return
        }
        startTableRead(record, list, since: offset, preface: preface, reply: reply)
    }

    /// A member that fell out of the log's window: when everything it reads is durable and
    /// it reads structured frames, it catches up from the table instead of being cut off.
    func catchUpFromTable(_ record: MemberRecord) -> Bool {
        guard store != nil, record.encoding != .raw, !record.lists.isEmpty,
            record.lists.allSatisfy({ $0.isDurable })
        else { return false }
        record.position = .live
        record.floors = [:]
        writeReplies(of: record, upTo: .max)
        for list in record.lists where record.tableReads[ObjectIdentifier(list)] == nil {
            startTableRead(
                record, list, since: record.cursors[ObjectIdentifier(list)] ?? 0, preface: nil, reply: nil)
        }
        counters.fromTable += 1
        record.member.logger.log(.debug, "socket fell out of the log, catches up from the table", [:])
        return true
    }

    // MARK: - Reading from the table

    private func startTableRead(
        _ record: MemberRecord, _ list: SubscriberList, since: UInt64,
        preface: ((Bool) -> ByteBuffer?)?, reply: ((String?, Bool) -> ByteBuffer)?
    ) {
        let read = TableRead(since: since, preface: preface, reply: reply)
        record.tableReads[ObjectIdentifier(list)] = read
        requestPage(record, list, read)
    }

    private func requestPage(_ record: MemberRecord, _ list: SubscriberList, _ read: TableRead) {
        guard let store else { return }
        read.waitingForPage = true
        let after = max(read.nextAfter, record.cursors[ObjectIdentifier(list)] ?? 0)
        let bound = NIOLoopBound((self, record, list, read), eventLoop: eventLoop)
        let loop = eventLoop
        store.readPage(channel: list.channel, after: after) { page in
            loop.execute {
                let (shard, record, list, read) = bound.value
                shard.pageArrived(page, record, list, read)
            }
        }
    }

    private func pageArrived(_ page: DurablePage?, _ record: MemberRecord, _ list: SubscriberList, _ read: TableRead) {
        guard members[ObjectIdentifier(record.member)] === record, record.tableReads[ObjectIdentifier(list)] === read,
            let page
        else { return }
        read.waitingForPage = false
        read.caughtUp = page.complete
        if read.recovered == nil {
            let recovered: Bool
            if let first = page.rows.first {
                recovered = first.offset <= read.since + 1
            } else {
                recovered = (durable[list.channel] ?? 0) <= read.since
            }
            read.recovered = recovered
            if let frame = read.preface?(recovered) { record.member.deliverReply(frame) }
        }
        read.pending.append(contentsOf: page.rows)
        if let last = page.rows.last { read.nextAfter = max(read.nextAfter, last.offset) }
        // The next page is read while this one is written, unless an earlier one is still
        // unwritten: a stalled socket holds at most two pages here.
        if !page.complete, read.pending.count == page.rows.count { requestPage(record, list, read) }
        writeTableRead(record, list, read)
    }

    /// Writes what the member's table reads hold, as far as its socket takes them.
    func writeTableReads(of record: MemberRecord) {
        for list in record.lists {
            guard let read = record.tableReads[ObjectIdentifier(list)] else { continue }
            writeTableRead(record, list, read)
        }
    }

    private func writeTableRead(_ record: MemberRecord, _ list: SubscriberList, _ read: TableRead) {
        let key = ObjectIdentifier(list)
        while let row = read.pending.first {
            if row.offset <= record.cursors[key, default: 0] {
                read.pending.removeFirst()
                continue
            }
            let written = frame(of: row, channel: list.channel, encoding: record.encoding)
            guard record.member.deliver(written) else {
                record.member.flushIfNeeded()
                return  // canWrite goes on
            }
            record.cursors[key] = row.offset
            read.pending.removeFirst()
            counters.replayed += 1
            counters.delivered += 1
            counters.bytesOut += written.readableBytes
        }
        record.member.flushIfNeeded()
        guard !read.waitingForPage else { return }
        if read.caughtUp {
            handOver(record, list, read)
        } else {
            requestPage(record, list, read)
        }
    }

    /// The table is read up to what it held; the log takes over from the next message if it
    /// holds it, or live delivery if this loop has seen nothing newer. Otherwise (the log
    /// lost it meanwhile) another page.
    private func handOver(_ record: MemberRecord, _ list: SubscriberList, _ read: TableRead) {
        let cursor = record.cursors[ObjectIdentifier(list), default: 0]
        let newest = durable[list.channel] ?? 0
        let start = firstLogSequence(of: list.channel, after: cursor)
        if let start, log.entry(start)?.durableOffset == cursor + 1 {
            record.tableReads[ObjectIdentifier(list)] = nil
            replay(
                record, list, from: start, boundary: log.next, then: read.reply?("\(newest)", read.recovered ?? false))
        } else if start == nil, newest <= cursor {
            record.tableReads[ObjectIdentifier(list)] = nil
            if let reply = read.reply {
                send(reply(cursor == 0 ? nil : "\(cursor)", read.recovered ?? false), to: record)
            }
        } else {
            read.caughtUp = false
            requestPage(record, list, read)
        }
    }

    /// The sequence of the log's first durable message of `channel` after `offset`.
    private func firstLogSequence(of channel: ChannelKey, after offset: UInt64) -> UInt64? {
        guard let entries = log.entries(from: log.first) else { return nil }
        for entry in entries where entry.channel == channel {
            if let durableOffset = entry.durableOffset, durableOffset > offset { return entry.sequence }
        }
        return nil
    }

    private func frame(
        of row: (offset: UInt64, payload: ByteBuffer), channel: ChannelKey, encoding: FrameEncoding
    ) -> ByteBuffer {
        switch encoding {
        case .raw:
            return WebSocketFrames.frame(opcode: .text, payload: row.payload, allocator: ByteBufferAllocator())
        case .v1:
            return MessageFrames.v1Message(channel: channel.name, offset: "\(row.offset)", payload: row.payload)
        case .sse:
            return MessageFrames.sseEvent(offset: "\(row.offset)", payload: row.payload)
        }
    }
}
