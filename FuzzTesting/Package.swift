// swift-tools-version:6.1
//
// GuestVault fuzz targets: one libFuzzer executable per parser, kept out of the main
// package so that `swift build` and `swift test` there never need the fuzzer runtime.
// Build and run them with ./run.sh (it passes -sanitize=fuzzer,address); docs/RELIABILITY.md.

import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

/// A fuzz target: an executable whose `LLVMFuzzerTestOneInput` libFuzzer calls.
func fuzzTarget(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .executableTarget(name: name, dependencies: ["FuzzSupport"] + dependencies, swiftSettings: strict)
}

let package = Package(
    name: "FuzzTesting",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "GuestVault", path: ".."),
    ],
    targets: [
        // libFuzzer's LLVMFuzzerMutate, for the custom mutators (a header only; the
        // symbol comes from the fuzzer runtime that -sanitize=fuzzer links).
        .systemLibrary(name: "CLibFuzzer"),
        .target(
            name: "FuzzSupport",
            dependencies: [
                "CLibFuzzer",
                .product(name: "GuestVaultCrypto", package: "GuestVault"),
                .product(name: "GuestVaultKeys", package: "GuestVault"),
            ],
            swiftSettings: strict
        ),
        fuzzTarget("FuzzContainerReader", [
            .product(name: "GuestVaultState", package: "GuestVault"),
            .product(name: "GuestVaultKeys", package: "GuestVault"),
            .product(name: "GuestVaultCrypto", package: "GuestVault"),
        ]),
        fuzzTarget("FuzzStreamReader", [
            .product(name: "GuestVaultState", package: "GuestVault"),
            .product(name: "GuestVaultKeys", package: "GuestVault"),
            .product(name: "GuestVaultCrypto", package: "GuestVault"),
        ]),
        fuzzTarget("FuzzSlotList", [
            .product(name: "GuestVaultKeys", package: "GuestVault"),
            .product(name: "GuestVaultCrypto", package: "GuestVault"),
        ]),
        fuzzTarget("FuzzControlChannel", [
            .product(name: "GuestVaultTPM", package: "GuestVault"),
            .product(name: "GuestVaultCore", package: "GuestVault"),
        ]),
        fuzzTarget("FuzzDataChannel", [
            .product(name: "GuestVaultTPM", package: "GuestVault"),
            .product(name: "GuestVaultCore", package: "GuestVault"),
        ]),
        fuzzTarget("FuzzRecoveryKeyFile", [
            .product(name: "GuestVaultKeys", package: "GuestVault"),
            .product(name: "GuestVaultCrypto", package: "GuestVault"),
        ]),
        fuzzTarget("FuzzBackupManifest", [
            .product(name: "GuestVaultBackup", package: "GuestVault"),
        ]),
        fuzzTarget("FuzzTransferReceiver", [
            .product(name: "GuestVaultTransfer", package: "GuestVault"),
            .product(name: "GuestVaultTransferTesting", package: "GuestVault"),
            .product(name: "GuestVaultState", package: "GuestVault"),
            .product(name: "GuestVaultKeys", package: "GuestVault"),
            .product(name: "GuestVaultCrypto", package: "GuestVault"),
        ]),
        fuzzTarget("FuzzUEFIVariableStore", [
            .product(name: "GuestVaultUEFI", package: "GuestVault"),
            .product(name: "GuestVaultCore", package: "GuestVault"),
        ]),
        fuzzTarget("FuzzBootPolicy", [
            .product(name: "GuestVaultTPMContainer", package: "GuestVault"),
            .product(name: "GuestVaultCore", package: "GuestVault"),
        ]),
        fuzzTarget("FuzzSwtpmStateFile", [
            .product(name: "GuestVaultTPM", package: "GuestVault"),
            .product(name: "GuestVaultCore", package: "GuestVault"),
            .product(name: "GuestVaultCrypto", package: "GuestVault"),
        ]),
    ]
)
