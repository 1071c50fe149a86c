import ArgumentParser
import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState

/// For the crash-consistency tests: commits entry "tpm.permanent" with content derived
/// from the generation in a loop, printing each generation after its commit returned.
struct DebugCommitLoop: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug-commit-loop", abstract: "Commit in a loop (crash tests).", shouldDisplay: false)

    @OptionGroup var vault: VaultOptions

    @Argument var state: String

    @Option var size: Int = 8192

    @Option var count: Int = 1_000_000

    func run() throws {
        let container = try GuestStateContainer.open(at: state, access: .readWrite)
        try container.unlock(with: UnlockCredentials(vault: vault.open()))
        for _ in 0..<count {
            let next = container.generation + 1
            try container.write("tpm.permanent", CrashPattern.bytes(generation: next, size: size))
            let generation = try container.commit()
            FileHandle.standardOutput.write(Data("\(generation)\n".utf8))
        }
    }
}

/// The content committed at each generation by the crash tests.
enum CrashPattern {
    static func bytes(generation: UInt64, size: Int) -> [UInt8] {
        (0..<size).map { UInt8(truncatingIfNeeded: UInt64($0) &* 2654435761 &+ generation &* 40503) }
    }
}
