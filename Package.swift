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
        .library(name: "GuestVaultCore", targets: ["GuestVaultCore"]),
        .library(name: "GuestVaultCrypto", targets: ["GuestVaultCrypto"]),
        .library(name: "GuestVaultKeys", targets: ["GuestVaultKeys"]),
        .library(name: "GuestVaultState", targets: ["GuestVaultState"]),
        .library(name: "GuestVaultTPM", targets: ["GuestVaultTPM"]),
        .library(name: "GuestVaultTPMContainer", targets: ["GuestVaultTPMContainer"]),
        .library(name: "GuestVaultTransfer", targets: ["GuestVaultTransfer"]),
        .library(name: "GuestVaultCluster", targets: ["GuestVaultCluster"]),
        .library(name: "GuestVaultUEFI", targets: ["GuestVaultUEFI"]),
        .library(name: "GuestVaultBackup", targets: ["GuestVaultBackup"]),
        // A scriptable transfer sender for tests and fuzzers of receivers.
        .library(name: "GuestVaultTransferTesting", targets: ["GuestVaultTransferTesting"]),
        .executable(name: "guestvault", targets: ["GuestVaultCLI"]),
        // The per-VM process alone (`serve` and the swtpm front ends), linked lean and with
        // the Swift runtime inside: what each VM's vTPM costs (docs/PERFORMANCE.md).
        .executable(name: "guestvault-vm", targets: ["guestvault-vm"]),
        // The C ABI for host tools: libguestvault.so with include/guestvault.h (docs/C-API.md).
        .library(name: "GuestVault", type: .dynamic, targets: ["GuestVaultC"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        // etcd's JSON gateway (docs/CLUSTER.md): a maintained HTTP client on SwiftNIO.
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.100.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.30.0"),
    ],
    targets: [
        // MARK: C bindings: module maps only.
        .systemLibrary(
            name: "CLibCrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CPKCS11",
            pkgConfig: "p11-kit-1",
            providers: [.apt(["libp11-kit-dev"])]
        ),
        // prctl(2) (process hardening), which Glibc's module does not export.
        .systemLibrary(name: "CLinuxProcess"),
        .systemLibrary(
            name: "CLibTPMS",
            pkgConfig: "libtpms",
            providers: [.apt(["libtpms-dev"])]
        ),

        // MARK: Core: the one byte codec, the error shape and checked arithmetic. No I/O.
        .target(
            name: "GuestVaultCore",
            swiftSettings: strict
        ),

        // MARK: Crypto core: the only module that calls OpenSSL.
        .target(
            name: "GuestVaultCrypto",
            dependencies: ["CLibCrypto", "GuestVaultCore"],
            swiftSettings: strict
        ),

        // MARK: System calls (durable files, locks, permissions): one audited layer.
        .target(
            name: "GuestVaultSystem",
            dependencies: ["GuestVaultCore", "CLinuxProcess", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),

        // MARK: Key vaults (file, PKCS#11), the per-VM key hierarchy, protectors, rollback.
        .target(
            name: "GuestVaultKeys",
            dependencies: ["GuestVaultCore", "GuestVaultCrypto", "GuestVaultSystem", "CPKCS11"],
            swiftSettings: strict
        ),

        // MARK: Sealed state: sealed blobs and streams, the guest state container file.
        .target(
            name: "GuestVaultState",
            dependencies: ["GuestVaultCore", "GuestVaultCrypto", "GuestVaultKeys", "GuestVaultSystem"],
            swiftSettings: strict
        ),

        // MARK: Backup and restore of containers (also of running VMs), with a manifest.
        .target(
            name: "GuestVaultBackup",
            dependencies: ["GuestVaultCore", "GuestVaultCrypto", "GuestVaultKeys", "GuestVaultState", "GuestVaultSystem"],
            swiftSettings: strict
        ),

        // MARK: Transfer: the encrypted, authenticated framing that moves sealed state.
        .target(
            name: "GuestVaultTransfer",
            dependencies: ["GuestVaultCore", "GuestVaultCrypto", "GuestVaultKeys", "GuestVaultState", "GuestVaultSystem",
                           .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .target(
            name: "GuestVaultTransferTesting",
            dependencies: ["GuestVaultTransfer", "GuestVaultCore", "GuestVaultCrypto", "GuestVaultKeys", "GuestVaultState"],
            swiftSettings: strict
        ),

        // MARK: Virtual TPM over libtpms.
        // Engine, manufacture, the swtpm-compatible server and swtpm's formats: no keys,
        // no containers.
        .target(
            name: "GuestVaultTPM",
            dependencies: ["CLibTPMS", "GuestVaultCore", "GuestVaultCrypto", "GuestVaultSystem",
                           .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // The glue between the TPM and a sealed guest state container: the TPM's storage
        // in a container, manufacture into one, swtpm state directory import and export.
        .target(
            name: "GuestVaultTPMContainer",
            dependencies: ["GuestVaultTPM", "GuestVaultState", "GuestVaultCore", "GuestVaultCrypto", "GuestVaultSystem",
                           .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),

        // MARK: Cluster: VM ownership leases, fencing and cluster-wide rollback counters on etcd.
        .target(
            name: "GuestVaultCluster",
            dependencies: [
                "GuestVaultCore",
                "GuestVaultSystem",
                "GuestVaultState",
                "GuestVaultTPM",
                "GuestVaultTPMContainer",
                "GuestVaultKeys",
                "GuestVaultCrypto",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict
        ),

        // MARK: UEFI: the OVMF/EDK2 variable store and Secure Boot databases, parsed as hostile input. No I/O.
        .target(
            name: "GuestVaultUEFI",
            dependencies: ["GuestVaultCore"],
            swiftSettings: strict
        ),

        // MARK: The per-VM process: `serve` and the swtpm-compatible front ends (swtpm,
        // swtpm_setup, swtpm_ioctl) that libvirt and Proxmox run. No cluster client.
        .target(
            name: "GuestVaultVM",
            dependencies: [
                "GuestVaultCore",
                "GuestVaultCrypto",
                "GuestVaultKeys",
                "GuestVaultState",
                "GuestVaultSystem",
                "GuestVaultTPM",
                "GuestVaultTPMContainer",
                "GuestVaultUEFI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // `guestvault-vm`: GuestVaultVM alone, the Swift runtime and FoundationEssentials linked in
        // (started once per VM: no shared-library loading and relocation of the whole CLI).
        .executableTarget(
            name: "guestvault-vm",
            dependencies: ["GuestVaultVM"],
            path: "Sources/guestvault-vm",
            swiftSettings: strict,
            // SwiftPM's --static-swift-stdlib would link every executable so; this links only
            // this one, naming the static FoundationEssentials' own libraries (which the
            // modules, compiled against the shared one, do not list; the modules it links
            // import FoundationEssentials, never Foundation: docs/ARCHITECTURE.md); lld,
            // because the GNU linkers warn about a glibc function FoundationEssentials uses;
            // packed relative relocations and no exported symbols (the static runtime's
            // link line exports every symbol: 7,600 dynamic symbols the loader searches
            // for each library's relocations), for a smaller, quicker start.
            linkerSettings: [.unsafeFlags(["-static-stdlib", "-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs", "-Xlinker", "--no-export-dynamic", "-Xlinker", "--start-group",
                                           "-lFoundationEssentials", "-l_FoundationCShims", "-l_FoundationCollections",
                                           "-lswiftDispatch", "-ldispatch", "-lBlocksRuntime", "-lswiftSynchronization",
                                           "-lswift_RegexParser", "-lswift_StringProcessing",
                                           "-Xlinker", "--end-group"], .when(platforms: [.linux]))]
        ),

        // MARK: The `guestvault` command-line tool.
        .executableTarget(
            name: "GuestVaultCLI",
            dependencies: [
                "GuestVaultCore",
                "GuestVaultCrypto",
                "GuestVaultKeys",
                "GuestVaultState",
                "GuestVaultSystem",
                "GuestVaultTPM",
                "GuestVaultTPMContainer",
                "GuestVaultTransfer",
                "GuestVaultCluster",
                "GuestVaultUEFI",
                "GuestVaultBackup",
                "GuestVaultVM",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/guestvault",
            swiftSettings: strict
        ),

        // MARK: The C ABI (@_cdecl exports, header in include/guestvault.h).
        .target(
            name: "GuestVaultC",
            dependencies: ["GuestVaultCore", "GuestVaultCrypto", "GuestVaultKeys", "GuestVaultState"],
            swiftSettings: strict
        ),

        // MARK: Known-answer vectors (top-level Vectors/ folder).
        .target(
            name: "GuestVaultVectors",
            path: "Vectors",
            exclude: ["README.md", "tools"],
            sources: ["VectorFiles.swift"],
            resources: [.copy("public"), .copy("formats")],
            swiftSettings: strict
        ),

        // MARK: Tests.
        // The crash-consistency tests' writer (docs/RELIABILITY.md): built with the tests,
        // not a product.
        .executableTarget(
            name: "guestvault-crash-tool",
            dependencies: ["GuestVaultState", "GuestVaultKeys", "GuestVaultSystem"],
            path: "Tests/GuestVaultCrashTool",
            swiftSettings: strict
        ),
        .target(
            name: "GuestVaultTestSupport",
            dependencies: ["GuestVaultSystem"],
            path: "Tests/GuestVaultTestSupport",
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultCoreTests",
            dependencies: ["GuestVaultCore"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultSystemTests",
            dependencies: ["GuestVaultSystem"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultCryptoTests",
            dependencies: ["GuestVaultCrypto", "GuestVaultCore", "GuestVaultVectors"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultKeysTests",
            dependencies: ["GuestVaultCore", "GuestVaultKeys", "GuestVaultCrypto", "GuestVaultSystem", "GuestVaultVectors", "GuestVaultTestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultStateTests",
            dependencies: ["GuestVaultState", "GuestVaultCore", "GuestVaultKeys", "GuestVaultCrypto", "GuestVaultSystem", "GuestVaultVectors",
                           "GuestVaultTestSupport", "GuestVaultCLI", "guestvault-crash-tool"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultTransferTests",
            dependencies: ["GuestVaultCore", "GuestVaultTransfer", "GuestVaultTransferTesting", "GuestVaultState", "GuestVaultKeys", "GuestVaultCrypto", "GuestVaultSystem",
                           "GuestVaultTestSupport", "GuestVaultCLI"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultTPMTests",
            dependencies: ["GuestVaultTPM", "GuestVaultTPMContainer", "GuestVaultCore", "GuestVaultState", "GuestVaultKeys", "GuestVaultCrypto", "GuestVaultSystem",
                           "GuestVaultTestSupport", "GuestVaultCLI"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultCTests",
            dependencies: ["GuestVaultC", "GuestVaultState", "GuestVaultKeys", "GuestVaultCrypto", "GuestVaultCore"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultUEFITests",
            dependencies: ["GuestVaultUEFI", "GuestVaultCore", "GuestVaultTestSupport", "GuestVaultCLI"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultTrustedLaunchTests",
            dependencies: ["GuestVaultTPMContainer", "GuestVaultTPM", "GuestVaultState", "GuestVaultKeys", "GuestVaultCore", "GuestVaultCrypto", "GuestVaultSystem",
                           "GuestVaultUEFI", "GuestVaultTestSupport", "GuestVaultCLI"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultBackupTests",
            dependencies: ["GuestVaultBackup", "GuestVaultState", "GuestVaultKeys", "GuestVaultCrypto", "GuestVaultCore", "GuestVaultSystem",
                           "GuestVaultVectors", "GuestVaultTestSupport", "GuestVaultCLI"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultFrontEndTests",
            dependencies: ["GuestVaultCLI", "GuestVaultVM", "GuestVaultState", "GuestVaultKeys", "GuestVaultCrypto", "GuestVaultTestSupport",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultCLITests",
            dependencies: ["GuestVaultCLI", "GuestVaultCore", "GuestVaultState", "GuestVaultTestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "GuestVaultClusterTests",
            dependencies: ["GuestVaultCluster", "GuestVaultCore", "GuestVaultSystem", "GuestVaultTPM", "GuestVaultTestSupport", "GuestVaultCLI", "GuestVaultVM"],
            swiftSettings: strict
        ),
    ]
)
