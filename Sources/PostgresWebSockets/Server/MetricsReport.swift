import NIOConcurrencyHelpers

/// What `/metrics` and `/channels` answer, gathered when they are asked from the owner of
/// each fact: the loops' shards (sockets, deliveries, latency), the notifier (messages,
/// batches, queue), the listener's `DatabaseStatus` and `ListenRegistry`, the handshakes'
/// outcomes. Nothing is counted twice and the fan-out path takes no lock or atomic for it.
struct MetricsReport {
    struct ShardPart {
        var counters = DeliveryCounters()
        var sockets: [FrameEncoding: Int] = [:]
        /// Reading sockets per channel.
        var readers: [String: Int] = [:]

        mutating func add(_ other: ShardPart) {
            counters.add(other.counters)
            sockets.merge(other.sockets, uniquingKeysWith: +)
            readers.merge(other.readers, uniquingKeysWith: +)
        }
    }

    let shards: ShardPart

    static func gather(from server: ServerContext) async -> MetricsReport {
        let total = NIOLockedValueBox(ShardPart())
        await server.hub.forEachShard { shard in
            let part = shard.metricsPart()
            total.withLockedValue { $0.add(part) }
        }
        return MetricsReport(shards: total.withLockedValue { $0 })
    }

    /// `GET /channels`: this server's channels with at least one reading socket.
    var channels: JSONValue {
        .object([
            (
                "channels",
                .array(
                    shards.readers.sorted { $0.key < $1.key }.map { name, count in
                        .object([("name", .string(name)), ("sockets", .number("\(count)"))])
                    })
            )
        ])
    }

    /// `GET /metrics`.
    func prometheusText(_ server: ServerContext) -> String {
        var text = PrometheusText()
        text.labelled(
            "pgws_open_sockets", .gauge, "Open sockets by protocol.", label: "protocol",
            [("raw", FrameEncoding.raw), ("pgws.v1", .v1), ("sse", .sse)].map {
                ($0.0, Double(shards.sockets[$0.1] ?? 0))
            })
        text.labelled(
            "pgws_handshakes_total", .counter,
            "Handshakes (WebSocket and event stream) by outcome: accepted or the refusal.",
            label: "outcome", server.handshakeOutcomes.snapshot.map { ($0.0, Double($0.1)) })
        let counters = shards.counters
        text.counter(
            "pgws_deliveries_total", "Frames written to sockets, live and replayed.", Double(counters.delivered))
        text.counter("pgws_delivered_bytes_total", "Bytes of the frames written to sockets.", Double(counters.bytesOut))
        text.counter(
            "pgws_replayed_total", "Frames written from the delivery log or a durable table.", Double(counters.replayed)
        )
        text.counter(
            "pgws_slow_client_closes_total", "Sockets closed because they fell out of the delivery window.",
            Double(counters.cutOff))
        let messages = server.notifier.messageCounts
        text.counter("pgws_client_messages_total", "Client messages taken for PostgreSQL.", Double(messages.taken))
        text.counter(
            "pgws_client_messages_committed_total", "Client messages PostgreSQL committed.", Double(messages.committed))
        text.gauge(
            "pgws_notify_queue_depth", "Messages and events waiting for PostgreSQL.",
            Double(server.notifier.queuedCount))
        let batches = server.notifier.committedBatchSizes
        text.histogram(
            "pgws_notify_batch_size", "Messages per NOTIFY batch committed.", bounds: batches.bounds,
            counts: batches.counts, sum: batches.sum)
        text.gauge("pgws_listener_up", "1 while the listener is connected and LISTENs.", server.status.isUp ? 1 : 0)
        text.counter(
            "pgws_database_outage_seconds_total", "Seconds the database was unreachable after having been up.",
            server.status.outageSeconds)
        text.gauge(
            "pgws_listened_channels", "Channels the listener LISTENs on.", Double(server.registry.listeningCount))
        text.histogram(
            "pgws_delivery_latency_seconds",
            "From a notification's arrival at the server to the pass of its event loop that writes it.",
            bounds: LatencyHistogram.bounds, counts: counters.latency.counts,
            sum: Double(counters.latency.sumNanoseconds) / 1e9)
        return text.text
    }
}

extension LoopShard {
    func metricsPart() -> MetricsReport.ShardPart {
        var part = MetricsReport.ShardPart(counters: counters)
        for record in members.values { part.sockets[record.encoding, default: 0] += 1 }
        for (key, list) in channels where !list.records.isEmpty { part.readers[key.name] = list.records.count }
        return part
    }
}
