// swift-tools-version:6.1
//
// GuestVault's benchmarks, in a nested package so that their build (package-benchmark
// and its dependencies, release mode) stays out of `swift test`.
//
//   cd Benchmarks && swift package benchmark

import PackageDescription

let package = Package(
    name: "GuestVaultBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "GuestVault", path: "../"),
        .package(url: "https://github.com/ordo-one/package-benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "CryptoBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "GuestVaultCrypto", package: "GuestVault"),
            ],
            path: "Benchmarks/CryptoBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
    ]
)
