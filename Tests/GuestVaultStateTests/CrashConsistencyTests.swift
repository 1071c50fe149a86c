import Foundation
import GuestVaultKeys
import GuestVaultState
import Testing

/// A child process commits in a loop and is killed with SIGKILL at random moments. Every
/// time, the container must open (no rollback error, no damage) at the last generation
/// the child reported committed, or the one after it (committed but not yet reported),
/// with exactly that generation's content.
@Suite struct CrashConsistencyTests {
    static var kills: Int {
        Int(ProcessInfo.processInfo.environment["GUESTVAULT_CRASH_KILLS"] ?? "") ?? 200
    }

    @Test func sigkillDuringCommitsNeverLosesOrDamagesACommit() throws {
        let f = try Fixture()
        do {
            let container = try f.create()
            try container.write("tpm.permanent", crashPattern(generation: 2, size: 8192))
            try container.commit()
        }
        var generator = SystemRandomNumberGenerator()
        var lastKnown: UInt64 = 2
        var sawCommitInFlight = 0
        var killedAfterCommits = 0
        for round in 0..<Self.kills {
            let child = Process()
            child.executableURL = URL(fileURLWithPath: GuestVaultBinary.path)
            child.arguments = ["debug-commit-loop", "--vault", f.vault.path, f.statePath]
            let out = Pipe()
            child.standardOutput = out
            child.standardError = FileHandle.nullDevice
            try child.run()
            var early = Data()
            if round % 10 == 0 {
                // Some kills land while the child is still opening (and clearing any
                // unfinished append).
                usleep(UInt32.random(in: 1_000...60_000, using: &generator))
            } else {
                // Most land while it commits: wait for its first commit, then a moment.
                early = out.fileHandleForReading.availableData
                usleep(UInt32.random(in: 0...20_000, using: &generator))
            }
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
            let text = String(decoding: early + out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let reported = text.split(separator: "\n").compactMap { UInt64($0) }
            if let last = reported.last {
                #expect(last > lastKnown || reported.count == 0)
                lastKnown = last
                killedAfterCommits += 1
            }

            let container = try GuestStateContainer.open(at: f.statePath)
            try container.unlock(with: UnlockCredentials(vault: f.vault))
            let generation = container.generation
            #expect(generation == lastKnown || generation == lastKnown + 1,
                    "round \(round): opened generation \(generation), last reported \(lastKnown)")
            if generation == lastKnown + 1 { sawCommitInFlight += 1 }
            #expect(try container.read("tpm.permanent") == crashPattern(generation: generation, size: 8192),
                    "round \(round): content of generation \(generation)")
            lastKnown = generation
        }
        print("crash consistency: \(Self.kills) kills, \(killedAfterCommits) after at least one commit, \(sawCommitInFlight) with a commit durable but unreported; every reopen at the expected generation with its content")
    }
}
