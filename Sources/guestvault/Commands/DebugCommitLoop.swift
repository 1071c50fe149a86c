import ArgumentParser
import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import Synchronization

/// For the crash-consistency tests: commits entry "tpm.permanent" with content derived
/// from the generation in a loop. Before each commit it prints `begin G` (G the
/// generation being committed), and `G` once the commit returned.
///
/// With `--kill-at POINT` the process SIGKILLs itself the Nth time (`--kill-after N`,
/// counted from the first commit of this run) it reaches POINT (a ``CrashPoint``), after
/// printing `crash-point POINT N` to standard error.
struct DebugCommitLoop: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug-commit-loop", abstract: "Commit in a loop (crash tests).", shouldDisplay: false)

    @OptionGroup var vault: VaultOptions

    @Argument var state: String

    @Option var size: Int = 8192

    @Option var count: Int = 1_000_000

    @Option(help: ArgumentHelp("Kill this process (SIGKILL) at a crash point: \(CrashPoint.allCases.map(\.rawValue).joined(separator: ", ")).",
                               valueName: "point"))
    var killAt: String?

    @Option(help: ArgumentHelp("With --kill-at: the Nth time the point is reached (from 1).", valueName: "n"))
    var killAfter: Int = 1

    func validate() throws {
        if let killAt, CrashPoint(rawValue: killAt) == nil {
            throw ValidationError("--kill-at \(killAt) is not a crash point (\(CrashPoint.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard killAfter >= 1 else { throw ValidationError("--kill-after must be 1 or more") }
    }

    func run() throws {
        let container = try GuestStateContainer.open(at: state, access: .readWrite)
        try container.unlock(with: UnlockCredentials(vault: vault.open()))
        if let point = killAt.flatMap(CrashPoint.init(rawValue:)) {
            // Armed after the unlock, so that only this run's commits count.
            let target = killAfter
            let arrivals = Arrivals()
            CrashPoint.setHook { reached in
                guard reached == point else { return }
                let n = arrivals.count.add(1, ordering: .relaxed).newValue
                guard n == target else { return }
                FileHandle.standardError.write(Data("crash-point \(point.rawValue) \(n)\n".utf8))
                kill(getpid(), SIGKILL)
            }
        }
        for _ in 0..<count {
            let next = container.generation + 1
            FileHandle.standardOutput.write(Data("begin \(next)\n".utf8))
            try container.write("tpm.permanent", CrashPattern.bytes(generation: next, size: size))
            let generation = try container.commit()
            FileHandle.standardOutput.write(Data("\(generation)\n".utf8))
        }
        try container.flush()
    }
}

/// How often the chosen crash point was reached (the counter outlives `run`'s frame).
private final class Arrivals: Sendable {
    let count = Atomic<Int>(0)
}

/// The content committed at each generation by the crash tests.
enum CrashPattern {
    static func bytes(generation: UInt64, size: Int) -> [UInt8] {
        (0..<size).map { UInt8(truncatingIfNeeded: UInt64($0) &* 2654435761 &+ generation &* 40503) }
    }
}
