import Foundation
import GuestVaultKeys
import GuestVaultState
import Testing

/// A child process (`guestvault-crash-tool`, Tests/GuestVaultCrashTool) commits in a loop and dies by SIGKILL,
/// either at a random instant or at a chosen point of the commit path. Every time, the
/// container must open at the last generation the child reported committed, or the one
/// after it (committed but not yet reported), with exactly that generation's content;
/// and the vault's rollback counter, read afresh from its file, must be that generation
/// or the one before, so it never refuses the container.
@Suite struct CrashConsistencyTests {
    static var kills: Int {
        Int(ProcessInfo.processInfo.environment["GUESTVAULT_CRASH_KILLS"] ?? "") ?? 200
    }

    // MARK: Random instants

    @Test func sigkillDuringCommitsNeverLosesOrDamagesACommit() throws {
        let f = try Fixture()
        do {
            let container = try f.create()
            try container.write("tpm.permanent", crashPattern(generation: 2, size: 8192))
            try container.commit()
        }
        var generator = SystemRandomNumberGenerator()
        var lastKnown: UInt64 = 2
        var killedAfterCommits = 0
        var duringCommit = 0
        var inFlightDurable = 0
        var sawCommitInFlight = 0
        var lost = 0
        for round in 0..<Self.kills {
            let child = try CommitLoopChild(f)
            if round % 10 == 0 {
                // Some kills land while the child is still opening (and clearing any
                // unfinished append).
                usleep(UInt32.random(in: 1_000...60_000, using: &generator))
            } else {
                // Most land while it commits: wait until it starts its first commit, then a moment.
                child.waitForOutput()
                usleep(UInt32.random(in: 0...20_000, using: &generator))
            }
            let run = child.kill()
            if let last = run.reported.last {
                #expect(last > lastKnown, "round \(round): reported \(last) after \(lastKnown)")
                lastKnown = last
                killedAfterCommits += 1
            }

            let reopened = try CrashCheck.reopen(f, size: 8192, context: "round \(round)")
            #expect(reopened.generation == lastKnown || reopened.generation == lastKnown + 1,
                    "round \(round): opened generation \(reopened.generation), last reported \(lastKnown)")
            if reopened.generation < lastKnown { lost += 1 }
            if reopened.generation == lastKnown + 1 { sawCommitInFlight += 1 }
            if let inFlight = run.inFlight {
                duringCommit += 1
                if reopened.generation == inFlight { inFlightDurable += 1 }
            }
            lastKnown = reopened.generation
        }
        #expect(lost == 0)
        print("crash consistency: \(Self.kills) kills, \(killedAfterCommits) after at least one commit, \(duringCommit) during a commit (between its start and its report), \(inFlightDurable) of those reopened at the in-flight generation, \(sawCommitInFlight) reopened one past the last reported, \(lost) lost; every reopen at the expected generation with its content, the rollback counter never ahead")
    }

    // MARK: Chosen points

    struct PointCase: CustomTestStringConvertible, Sendable {
        let point: String
        let after: Int
        /// Entry size: 1 MiB makes the loop compact every ninth commit.
        let size: Int
        var testDescription: String { "\(point) #\(after)" }
    }

    static let pointCases: [PointCase] = [
        .init(point: "after-record-write", after: 1, size: 8192),
        .init(point: "after-record-write", after: 2, size: 8192),
        .init(point: "after-record-write", after: 9, size: 8192),
        .init(point: "after-record-sync", after: 1, size: 8192),
        .init(point: "after-record-sync", after: 3, size: 8192),
        .init(point: "after-record-sync", after: 8, size: 8192),
        .init(point: "after-counter-write", after: 1, size: 8192),
        .init(point: "after-counter-write", after: 4, size: 8192),
        .init(point: "after-counter-write", after: 10, size: 8192),
        .init(point: "after-counter-sync", after: 1, size: 8192),
        .init(point: "after-counter-sync", after: 2, size: 8192),
        .init(point: "after-counter-sync", after: 6, size: 8192),
        .init(point: "after-rewrite-sync", after: 1, size: 1 << 20),
        .init(point: "after-rewrite-sync", after: 2, size: 1 << 20),
        .init(point: "after-rewrite-rename", after: 1, size: 1 << 20),
        .init(point: "after-rewrite-rename", after: 2, size: 1 << 20),
    ]

    @Test(arguments: pointCases)
    func sigkillAtAChosenPoint(_ c: PointCase) throws {
        let f = try Fixture()
        do {
            let container = try f.create()
            try container.write("tpm.permanent", crashPattern(generation: 2, size: c.size))
            try container.commit()
        }
        let start: UInt64 = 2
        let child = try CommitLoopChild(f, size: c.size, extra: ["--kill-at", c.point, "--kill-after", "\(c.after)", "--count", "200"])
        let run = child.wait(timeout: 120)
        #expect(run.killed, "\(c.testDescription): the child was not killed (stderr: \(run.stderr))")
        #expect(run.stderr.contains("crash-point \(c.point) \(c.after)"), "\(c.testDescription): stderr: \(run.stderr)")
        let lastReported = run.reported.last ?? start
        let inFlight = lastReported + 1
        if c.point != "after-counter-sync" {
            // Every other point is on the committing thread, inside commit `inFlight`.
            #expect(run.inFlight == inFlight, "\(c.testDescription): output \(run.stdout)")
        }

        // A rewrite stages its new file as `STATE.tmp-PID-N` (StagedFile).
        func leftovers() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: f.dir.path)) ?? []).filter { $0.hasPrefix("vm.state.tmp-\(child.pid)-") }
        }
        switch c.point {
        case "after-rewrite-sync":
            #expect(leftovers().count == 1, "the killed compaction left its new file")
            let info = try GuestStateContainer.open(at: f.statePath).info
            #expect(info.logBytes > info.liveBytes, "the container is the uncompacted one")
        case "after-rewrite-rename":
            #expect(leftovers().isEmpty)
            let info = try GuestStateContainer.open(at: f.statePath).info
            #expect(info.logBytes == info.liveBytes, "the container is the compacted one")
        default:
            break
        }

        let reopened = try CrashCheck.reopen(f, size: c.size, context: c.testDescription)
        switch c.point {
        case "after-record-write", "after-record-sync", "after-counter-write":
            // Killed in the Nth commit of the run, after its record reached the file.
            #expect(run.reported.count == c.after - 1)
            #expect(reopened.generation == start + UInt64(c.after), "\(c.testDescription): the in-flight commit")
            #expect(reopened.counter == (c.point == "after-counter-write" ? reopened.generation : reopened.generation - 1),
                    "\(c.testDescription): counter \(reopened.counter.map(String.init) ?? "none")")
        case "after-rewrite-sync", "after-rewrite-rename":
            // Compaction runs inside the commit, after its counter was recorded.
            #expect(reopened.generation == inFlight)
            #expect(reopened.counter == inFlight)
        default:
            // The counter's fdatasync runs in the background: the Nth one can come
            // after later commits.
            #expect(reopened.generation == lastReported || reopened.generation == inFlight)
        }

        // The next writer takes over: it clears what the killed one left and commits on.
        let next = try GuestStateContainer.open(at: f.statePath, access: .readWrite)
        try next.unlock(with: UnlockCredentials(vault: KeyVault.open(at: f.vault.path)))
        #expect(leftovers().isEmpty, "an unfinished compaction's file is removed by the next writer")
        try next.write("tpm.permanent", crashPattern(generation: reopened.generation + 1, size: c.size))
        #expect(try next.commit() == reopened.generation + 1)
        try next.flush()
    }
}

/// A `guestvault-crash-tool` child on the fixture's container.
final class CommitLoopChild {
    let process = Process()
    let out = Pipe()
    let err = Pipe()
    private var early = Data()

    var pid: Int32 { process.processIdentifier }

    /// The built `guestvault-crash-tool`, beside the test bundle in the build folder (as
    /// GuestVaultBinary finds `guestvault`).
    static var toolPath: String {
        var directory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<3 {
            let candidate = directory.appendingPathComponent("guestvault-crash-tool")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
            directory = directory.deletingLastPathComponent()
        }
        return "guestvault-crash-tool"
    }

    init(_ f: Fixture, size: Int = 8192, extra: [String] = []) throws {
        process.executableURL = URL(fileURLWithPath: Self.toolPath)
        process.arguments = ["--vault", f.vault.path, f.statePath, "--size", "\(size)"] + extra
        process.standardOutput = out
        process.standardError = err
        try process.run()
    }

    /// Blocks until the child has printed something (it is committing).
    func waitForOutput() {
        early = out.fileHandleForReading.availableData
    }

    /// SIGKILL now, then collect what it printed.
    func kill() -> Run {
        Foundation.kill(process.processIdentifier, SIGKILL)
        return collect()
    }

    /// Waits for the child to end by itself (a crash point), killing it after `timeout`.
    func wait(timeout: TimeInterval) -> Run {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        return collect()
    }

    private func collect() -> Run {
        process.waitUntilExit()
        let stdout = String(decoding: early + out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let killed = process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGKILL
        return Run(stdout: stdout, stderr: stderr, killed: killed)
    }

    struct Run {
        let stdout: String
        let stderr: String
        let killed: Bool

        private var lines: [Substring] { stdout.split(separator: "\n") }
        /// Generations whose commit returned.
        var reported: [UInt64] { lines.compactMap { UInt64($0) } }
        /// The generation being committed when the child died (its "begin" line is the
        /// last one), if it died inside a commit.
        var inFlight: UInt64? {
            guard let last = lines.last, last.hasPrefix("begin ") else { return nil }
            return UInt64(last.dropFirst("begin ".count))
        }
    }
}

enum CrashCheck {
    /// Opens the container after a kill with the vault read afresh from disk (another
    /// `KeyVault` would answer from its cache of the counter), checks the content and
    /// the counter, and returns the generation and the counter found before the unlock.
    static func reopen(_ f: Fixture, size: Int, context: String) throws -> (generation: UInt64, counter: UInt64?) {
        let vault = try KeyVault.open(at: f.vault.path)
        let counter = try vault.counters.latest(vm: f.vm)
        let container = try GuestStateContainer.open(at: f.statePath)
        // Throws a rollback error if the counter is ahead of the container.
        try container.unlock(with: UnlockCredentials(vault: vault))
        let generation = container.generation
        #expect(try container.read("tpm.permanent") == crashPattern(generation: generation, size: size),
                "\(context): content of generation \(generation)")
        #expect(counter == generation || counter.map { $0 + 1 } == generation,
                "\(context): counter \(counter.map(String.init) ?? "none") for generation \(generation)")
        return (generation, counter)
    }
}
