// swift-tools-version:6.1
//
// GuestVault: sealed trusted-launch guest state (vTPM, UEFI variables, runtime state)
// for virtual machines. See README.md and docs/.

import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "GuestVault",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "GuestVaultCrypto", targets: ["GuestVaultCrypto"]),
        .library(name: "GuestVaultTPM", targets: ["GuestVaultTPM"]),
        .executable(name: "guestvault", targets: ["GuestVaultCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // MARK: C bindings: module maps only.
        .systemLibrary(
            name: "CLibCrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CLibTPMS",
            pkgConfig: "libtpms",
            providers: [.apt(["libtpms-dev"])]
        ),

        // MARK: Crypto core: the only module that calls OpenSSL.
        .target(
            name: "GuestVaultCrypto",
            dependencies: ["CLibCrypto"],
            swiftSettings: strict
        ),

        // MARK: Virtual TPM over libtpms.
        .target(
            name: "GuestVaultTPM",
            dependencies: ["CLibTPMS", "GuestVaultCrypto"],
            swiftSettings: strict
        ),

        // MARK: The `guestvault` command-line tool.
        .executableTarget(
            name: "GuestVaultCLI",
            dependencies: [
                "GuestVaultCrypto",
                "GuestVaultTPM",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/guestvault",
            swiftSettings: strict
        ),

        // MARK: Known-answer vectors (top-level Vectors/ folder).
        .target(
            name: "GuestVaultVectors",
            path: "Vectors",
            exclude: ["README.md"],
            sources: ["VectorFiles.swift"],
            resources: [.copy("public")],
            swiftSettings: strict
        ),

        // MARK: Tests.
        .testTarget(
            name: "GuestVaultCryptoTests",
            dependencies: ["GuestVaultCrypto", "GuestVaultVectors"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultTPMTests",
            dependencies: ["GuestVaultTPM"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultCLITests",
            dependencies: ["GuestVaultCLI"],
            swiftSettings: strict
        ),
    ]
)
