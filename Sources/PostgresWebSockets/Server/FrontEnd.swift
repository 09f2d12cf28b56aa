import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// The listening socket, the pipeline every accepted connection starts with, and the socket
/// timers, as a `Service`: on graceful shutdown it stops accepting, closes every socket with
/// 1001, and drops those that have not finished closing after `closeGrace`.
final class FrontEnd: Service, Sendable {
    static let closeGrace = Duration.seconds(2)

    private let server: ServerContext
    private let group: any EventLoopGroup
    /// The bound port, or why binding failed.
    let bound: EventLoopPromise<Int>

    init(server: ServerContext, group: any EventLoopGroup) {
        self.server = server
        self.group = group
        self.bound = group.next().makePromise(of: Int.self)
    }

    func run() async throws {
        let hub = server.hub
        let limits = server.configuration.limits
        // Once a second (sooner for short ping settings) every socket's timers are checked:
        // cheaper for many idle sockets than a timer each; `exp` is enforced to the second.
        let sweep = min(
            TimeAmount.seconds(1), .nanoseconds(min(limits.pingInterval, limits.pongTimeout).nanoseconds / 2))
        await hub.forEachShard { $0.startSweeping(every: max(TimeAmount.milliseconds(10), sweep)) }
        let channel: any Channel
        do {
            channel = try await bind()
        } catch {
            await hub.forEachShard { $0.stopSweeping() }
            bound.fail(error)
            throw error
        }
        let settings = server.configuration.server
        let port = channel.localAddress?.port ?? settings.port
        bound.succeed(port)
        var metadata: LogMetadata = [
            .host: "\(settings.host)", .port: "\(port)", .tls: server.tls == nil ? "off" : "on",
            .auditChannel: "\(server.configuration.channels.auditChannel ?? "-")",
            .metaChannel: "\(server.configuration.channels.metaChannel ?? "-")",
            .poolSize: "\(server.configuration.notifier.poolSize)",
        ]
        if let tls = server.tls { metadata[.certificateSerial] = "\(tls.serial)" }
        server.logger.log(.notice, "postgres-websockets listening", metadata)
        try? await gracefulShutdown()
        server.logger.notice("shutting down")
        try? await channel.close()
        await hub.forEachShard { $0.shutDownAll() }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.server.slots.waitUntilEmpty() }
            group.addTask { try? await Task.sleep(for: Self.closeGrace) }
            await group.next()
            group.cancelAll()
        }
        await hub.forEachShard {
            $0.abortAll()
            $0.stopSweeping()
        }
    }

    private func bind() async throws -> any Channel {
        let settings = server.configuration.server
        let server = self.server
        let highWater = server.configuration.limits.maxSocketBuffer
        let tls = server.tls
        do {
            return try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 4096)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // Set here, synchronously: child channel options would cost futures per
                        // connection. TCP_NODELAY is inherited from the listening socket.
                        try channel.syncOptions?.setOption(
                            .writeBufferWaterMark, value: .init(low: highWater / 2, high: highWater))
                        let pipeline = channel.pipeline.syncOperations
                        // With TLS there is no plain HTTP: the TLS handler comes first and stays
                        // (the HTTP handler after it leaves on upgrade); everything behind it
                        // reads and writes plaintext ByteBuffers as before. The context is read
                        // per connection, so a reload serves the next connection.
                        if let tls { try pipeline.addHandler(NIOSSLServerHandler(context: tls.current)) }
                        try pipeline.addHandler(HTTPHandler(server: server))
                    }
                }
                .bind(host: Self.bindAddress(settings.host), port: settings.port)
                .get()
        } catch {
            throw BindError(host: settings.host, port: settings.port, underlying: error)
        }
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

/// The listening socket could not be opened: names the address, and what to change.
public struct BindError: Error, CustomStringConvertible {
    public let host: String
    public let port: Int
    let underlying: any Error

    public var description: String {
        let cause: String
        if let io = underlying as? IOError {
            switch io.errnoCode {
            case 98: cause = "the address is already in use (set PGWS_PORT or server-port to another port)"
            case 99: cause = "the address is not one of this machine's (set PGWS_HOST or server-host)"
            case 13: cause = "permission denied (ports below 1024 need privileges)"
            default: cause = "\(io)"
            }
        } else {
            cause = "\(underlying)"
        }
        return "cannot listen on \(host):\(port): \(cause)"
    }
}
