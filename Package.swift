// swift-tools-version: 6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "postgres-websockets",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "postgres-websockets", targets: ["postgres-websockets"]),
        .library(name: "PostgresWebSockets", targets: ["PostgresWebSockets"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        .target(name: "CLinuxShims"),
        .target(
            name: "PostgresWebSockets",
            dependencies: [
                "CLibPQ",
                "COpenSSL",
                "CLinuxShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "postgres-websockets",
            dependencies: [
                "PostgresWebSockets",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Shared by the integration tests and the benchmark: a throwaway PostgreSQL cluster,
        // a WebSocket client over real sockets, token minting and process helpers.
        .target(
            name: "BridgeTestSupport",
            dependencies: [
                "PostgresWebSockets",
                "CLibPQ",
                "CLinuxShims",
                "COpenSSL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/Support",
            swiftSettings: swiftSettings
        ),
        // The load generator and scenarios of `make bench`: starts PostgreSQL and the release
        // server, drives them with lean NIO WebSocket clients (in worker child processes),
        // and reports one table plus bench-results.json.
        .executableTarget(
            name: "pgws-bench",
            dependencies: [
                "BridgeTestSupport",
                "PostgresWebSockets",
                "CLibPQ",
                "COpenSSL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks",
            // The io_uring prototype is C, built by scripts/bench-uring (liburing is no dependency).
            exclude: ["uring"],
            swiftSettings: swiftSettings
        ),
        // libFuzzer's entry point, declared for the fuzz targets.
        .target(name: "CFuzzerDriver", path: "Fuzz/CFuzzerDriver"),
        // The fuzz targets of `make fuzz` in one executable (README: Fuzzing). `scripts/fuzz`
        // builds it with `-sanitize=fuzzer,address -DFUZZING` in .build-fuzz; a plain build
        // gives a program that replays inputs through a target without libFuzzer.
        .executableTarget(
            name: "pgws-fuzz",
            dependencies: [
                "PostgresWebSockets",
                "BridgeTestSupport",
                "CFuzzerDriver",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Fuzz/Targets",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "PostgresWebSocketsTests",
            dependencies: [
                "PostgresWebSockets",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "PostgresWebSockets",
                "BridgeTestSupport",
                "CLibPQ",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
