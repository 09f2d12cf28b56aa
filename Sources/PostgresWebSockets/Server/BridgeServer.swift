import Logging
import NIOCore
import NIOPosix

/// The listening socket and the pipeline every accepted connection starts with.
enum BridgeServer {
    static func bind(server: ServerContext, group: any EventLoopGroup) async throws -> any Channel {
        let config = server.configuration
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try configurePipeline(channel, server: server)
                }
            }
            .bind(host: bindAddress(config.host), port: config.port)
            .get()
    }

    private static func configurePipeline(_ channel: any Channel, server: ServerContext) throws {
        // Set here, synchronously: child channel options would cost futures per connection.
        // TCP_NODELAY is inherited from the listening socket, where NIO sets it.
        let highWater = server.configuration.maxSocketBuffer
        try channel.syncOptions?.setOption(.writeBufferWaterMark, value: .init(low: highWater / 2, high: highWater))
        try channel.pipeline.syncOperations.addHandler(HTTPHandler(server: server))
    }

    /// postgres-websockets (warp) accepts `*` / `*4` for every IPv4 address and `*6` for
    /// every IPv6 address; other values are addresses or host names.
    static func bindAddress(_ host: String) -> String {
        switch host {
        case "*", "*4", "!4": "0.0.0.0"
        case "*6", "!6": "::"
        default: host
        }
    }
}
