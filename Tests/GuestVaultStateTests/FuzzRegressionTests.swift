import Foundation
import GuestVaultCrypto
import GuestVaultKeys
@_spi(Testing) import GuestVaultState
import GuestVaultSystem
import Testing

/// Replays every input the container reader's fuzzer kept as a crash
/// (FuzzTesting/Crashes/FuzzContainerReader/) the way the fuzz target reads it: open
/// read-only in memory without keys, then unlock with the fuzzer's fixed vault and read every
/// entry. Each input runs in its own process (an exit test), so an input that still
/// traps fails this test instead of stopping the test run. No inputs: nothing to replay.
@Suite struct FuzzRegressionTests {
    static let crashes = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("FuzzTesting/Crashes/FuzzContainerReader").path

    /// The fuzz targets' root key (FuzzTesting/Sources/FuzzSupport/FixedVault.swift), the
    /// same as Vectors/formats/containers'.
    static let rootKey: [UInt8] = (0..<32).map { UInt8(0x30 + $0) }

    @Test func everyKeptContainerReaderCrashNowFailsCleanly() async throws {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: Self.crashes)) ?? [])
            .filter { !$0.hasPrefix(".") && !$0.hasSuffix(".md") }.sorted()
        for name in names {
            let path = "\(Self.crashes)/\(name)"
            await #expect(processExitsWith: .success, "FuzzTesting/Crashes/FuzzContainerReader/\(name) crashes the reader") { [path = path as String] in
                FuzzRegressionTests.readLikeTheFuzzer(path)
            }
        }
        print("fuzz regressions: FuzzContainerReader: \(names.count) kept crash input(s) replayed")
    }

    /// What FuzzTesting/Sources/FuzzContainerReader/main.swift does with an input.
    static func readLikeTheFuzzer(_ path: String) {
        // As the target does: in memory, from the input's bytes.
        guard let bytes = try? FileSystem.readFile(path, limit: 1 << 20),
              let container = try? GuestStateContainer.open(bytes: bytes, name: "input.state") else { return }
        _ = container.info
        let directory = TemporaryDirectory("fuzz-regression")
        guard let vault = try? KeyVault.createFileVault(at: directory.file("vault"), importing: SecretBytes(copying: rootKey)),
              (try? container.unlock(with: UnlockCredentials(vault: vault), allowRollback: true)) != nil else { return }
        for name in container.entryNames {
            try? container.readStream(name) { _ in }
            _ = try? container.read(name)
            for index: UInt64 in [0, 1, .max] { _ = try? container.readChunk(name, index: index) }
        }
    }
}
