import Foundation
import Glibc
import GuestVaultCore
import GuestVaultState
import Testing

/// Every verb ends a failure with one line on standard error and an exit code that
/// depends only on the error's category (README, `guestvault --help`).
@Suite struct ExitCodeTests {
    func expectFailure(_ result: CLIRunner.Result, _ category: ErrorCategory, mentioning: String? = nil,
                       sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        #expect(result.status == category.exitCode, "exit \(result.status), stderr: \(result.stderr)", sourceLocation: sourceLocation)
        let lines = result.stderr.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
        #expect(lines.count == 1, "one line on stderr: \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.hasPrefix("guestvault: "), sourceLocation: sourceLocation)
        #expect(!result.stderr.contains("NSCocoaErrorDomain") && !result.stderr.contains("Usage:"), sourceLocation: sourceLocation)
        if let mentioning { #expect(result.stderr.contains(mentioning), "\(result.stderr)", sourceLocation: sourceLocation) }
    }

    /// Whether the container library reports its errors with categories yet (the
    /// state branch's part of issue 12); until then its failures exit 1.
    static var containerErrorsHaveCategories: Bool { (ContainerError.self as Any.Type) is any GuestVaultError.Type }

    @Test func usageErrorsExit2WithOneLine() throws {
        expectFailure(try CLIRunner.run(["create", "--vault", "/tmp/x", "--vm", "not-a-uuid", "/tmp/x.state"]), .usage, mentioning: "--vm")
        expectFailure(try CLIRunner.run(["vault", "init", "--vault", "/tmp/x", "--scrypt-log2-n", "5"]), .usage, mentioning: "--scrypt-log2-n")
        expectFailure(try CLIRunner.run(["demo", "--size-mib", "0"]), .usage, mentioning: "--size-mib")
        expectFailure(try CLIRunner.run(["no-such-verb"]), .usage)
        expectFailure(try CLIRunner.run(["put"]), .usage)
        expectFailure(try CLIRunner.run(["--log-level", "loud", "inspect", "x"]), .usage, mentioning: "loud")
        let help = try CLIRunner.run(["--help"])
        #expect(help.status == 0)
        for category in ErrorCategory.allCases {
            #expect(help.stdout.contains(category.rawValue), "--help lists exit code \(category.exitCode) \(category)")
        }
    }

    /// `--log-level` (or GUESTVAULT_LOG_LEVEL) lets records through, one line each on
    /// stderr; by default only the failure line is there.
    @Test func logLevelSelectsRecords() throws {
        let debug = try CLIRunner.run(["--log-level", "debug", "vault", "status", "--vault", "/nonexistent/vault"])
        let lines = debug.stderr.split(separator: "\n")
        #expect(debug.status == ErrorCategory.notFound.exitCode)
        #expect(lines.count == 2 && lines[0].contains(" debug guestvault: started") && lines[0].contains("nonDumpable=true"), "\(debug.stderr)")
        let fromEnvironment = try CLIRunner.run(["vault", "status", "--vault", "/nonexistent/vault"], environment: ["GUESTVAULT_LOG_LEVEL": "debug"])
        #expect(fromEnvironment.stderr.contains(" debug guestvault: started"))
        let quiet = try CLIRunner.run(["vault", "status", "--vault", "/nonexistent/vault"], environment: ["GUESTVAULT_LOG_LEVEL": ""])
        #expect(quiet.stderr.split(separator: "\n").count == 1)
    }

    @Test func aMissingVaultExits3() throws {
        let dir = TemporaryDirectory()
        expectFailure(try CLIRunner.run(["vault", "status", "--vault", dir.file("none")]), .notFound, mentioning: dir.file("none"))
    }

    @Test func aWrongPassphraseExits7() throws {
        let dir = TemporaryDirectory()
        let vault = dir.file("vault"), right = dir.file("right"), wrong = dir.file("wrong")
        try Data("correct horse\n".utf8).write(to: URL(fileURLWithPath: right))
        try Data("battery staple\n".utf8).write(to: URL(fileURLWithPath: wrong))
        chmod(right, 0o600)
        chmod(wrong, 0o600)
        let made = try CLIRunner.run(["vault", "init", "--vault", vault, "--passphrase-file", right, "--scrypt-log2-n", "10"])
        #expect(made.status == 0, "\(made.stderr)")
        expectFailure(try CLIRunner.run(["vault", "status", "--vault", vault, "--passphrase-file", wrong]), .keys, mentioning: "passphrase")
        #expect(try CLIRunner.run(["vault", "status", "--vault", vault, "--passphrase-file", right]).status == 0)
    }

    /// A vault, a container with one entry, and the paths.
    func makeContainer(_ dir: TemporaryDirectory) throws -> (vault: String, state: String) {
        let vault = dir.file("vault"), state = dir.file("vm.state")
        #expect(try CLIRunner.run(["vault", "init", "--vault", vault]).status == 0)
        #expect(try CLIRunner.run(["create", "--vault", vault, "--vm", UUID().uuidString, state]).status == 0)
        let put = try CLIRunner.run(["put", "--vault", vault, state, "uefi.nvram", "-"], stdin: Data(repeating: 0x5a, count: 4096))
        #expect(put.status == 0, "\(put.stderr)")
        return (vault, state)
    }

    @Test(.enabled(if: containerErrorsHaveCategories, "needs the container's error categories (state branch)"))
    func aTamperedContainerExits8() throws {
        let dir = TemporaryDirectory()
        let (vault, state) = try makeContainer(dir)
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: state))
        let size = try handle.seekToEnd()
        // Flip a bit in the last committed bytes (the entry or its commit record).
        try handle.seek(toOffset: size / 2)
        let byte = try handle.read(upToCount: 1) ?? Data([0])
        try handle.seek(toOffset: size / 2)
        try handle.write(contentsOf: Data([byte[0] ^ 0x01]))
        try handle.close()
        expectFailure(try CLIRunner.run(["get", "--vault", vault, state, "uefi.nvram", "-"]), .integrity)
    }

    @Test(.enabled(if: containerErrorsHaveCategories, "needs the container's error categories (state branch)"))
    func anOlderCopyExits9() throws {
        let dir = TemporaryDirectory()
        let (vault, state) = try makeContainer(dir)
        let old = try Data(contentsOf: URL(fileURLWithPath: state))
        #expect(try CLIRunner.run(["put", "--vault", vault, state, "uefi.nvram", "-"], stdin: Data([1, 2, 3])).status == 0)
        try old.write(to: URL(fileURLWithPath: state))
        expectFailure(try CLIRunner.run(["get", "--vault", vault, state, "uefi.nvram", "-"]), .rollback)
    }

    /// Issue 13.9: the last KEK epoch is refused with a message, not a trap (exit 132).
    @Test func rekeyAtTheLastEpochFailsCleanly() throws {
        let dir = TemporaryDirectory()
        let (vault, state) = try makeContainer(dir)
        let last = try CLIRunner.run(["rekey", "--vault", vault, state, "--epoch", "4294967295"])
        #expect(last.status == 0, "\(last.stderr)")
        expectFailure(try CLIRunner.run(["rekey", "--vault", vault, state]), .limit, mentioning: "epoch")
        expectFailure(try CLIRunner.run(["rekey", "--vault", vault, state, "--epoch", "4294967296"]), .usage, mentioning: "--epoch")
    }

    /// Issue 13.14: a directory as input, and a FIFO or directory at root.key.
    @Test func oddFilesAreNamedNotDumpedOrWaitedOn() throws {
        let dir = TemporaryDirectory()
        let (vault, state) = try makeContainer(dir)
        let fromDirectory = try CLIRunner.run(["put", "--vault", vault, state, "uefi.nvram", dir.path])
        #expect(fromDirectory.status > 0 && fromDirectory.status < 128)
        expectFailure(fromDirectory, .io, mentioning: "directory")

        let rootKey = "\(vault)/root.key"
        try FileManager.default.removeItem(atPath: rootKey)
        #expect(mkfifo(rootKey, 0o600) == 0)
        // Would hang forever before: the FIFO is refused, not opened for reading.
        expectFailure(try CLIRunner.run(["vault", "status", "--vault", vault]), .permission, mentioning: "FIFO")

        try FileManager.default.removeItem(atPath: rootKey)
        try FileManager.default.createDirectory(atPath: rootKey, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        let directoryKey = try CLIRunner.run(["vault", "status", "--vault", vault])
        expectFailure(directoryKey, .permission, mentioning: "directory")
        #expect(!directoryKey.stderr.contains("exposed") && !directoryKey.stderr.contains("mode 7"))
    }

    /// Issue 13.7: `get` never replaces a symlink or a device, FIFO or directory.
    @Test func getRefusesNonRegularOutputs() throws {
        let dir = TemporaryDirectory()
        let (vault, state) = try makeContainer(dir)
        let victim = dir.file("victim")
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: victim))
        let link = dir.file("link")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: victim)
        expectFailure(try CLIRunner.run(["get", "--vault", vault, state, "uefi.nvram", link]), .permission, mentioning: "symbolic link")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == victim)
        #expect(try Data(contentsOf: URL(fileURLWithPath: victim)) == Data("keep me".utf8))

        let fifo = dir.file("fifo")
        #expect(mkfifo(fifo, 0o600) == 0)
        expectFailure(try CLIRunner.run(["get", "--vault", vault, state, "uefi.nvram", fifo]), .permission, mentioning: fifo)
        let type = try FileManager.default.attributesOfItem(atPath: fifo)[.type] as? FileAttributeType
        #expect(type != .typeRegular, "the FIFO was not replaced by a regular file")

        // A regular file is replaced once the entry verified; - is standard output.
        let out = try CLIRunner.run(["get", "--vault", vault, state, "uefi.nvram", victim])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: victim)) == Data(repeating: 0x5a, count: 4096))
        let stdout = try CLIRunner.run(["get", "--vault", vault, state, "uefi.nvram", "-"])
        #expect(stdout.status == 0 && stdout.stdout.utf8.count == 4096)
    }

    /// Issue 13.8: a running guestvault is not dumpable (its /proc files belong to root,
    /// not to the user it runs as), unless GUESTVAULT_DUMPABLE=1.
    @Test(.enabled(if: OtherUser.isAvailable, "needs root and setpriv"), arguments: [false, true])
    func aRunningProcessIsNotDumpable(optedOut: Bool) throws {
        let dir = try OtherUser.directory("gv-dumpable")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let vault = "\(dir)/vault", state = "\(dir)/vm.state"
        let binary = CLIRunner.binary.path
        #expect(try OtherUser.run([binary, "vault", "init", "--vault", vault]).status == 0)
        #expect(try OtherUser.run([binary, "create", "--vault", vault, "--vm", UUID().uuidString, state]).status == 0)
        // `put` from standard input waits for input with the container open.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = (optedOut ? ["GUESTVAULT_DUMPABLE=1"] : ["GUESTVAULT_DUMPABLE="]) +
            ["/usr/bin/setpriv", "--reuid=\(OtherUser.uid)", "--regid=\(OtherUser.gid)", "--clear-groups", "--",
             binary, "put", "--vault", vault, state, "vm.runtime", "-"]
        let input = Pipe()
        process.standardInput = input
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            try? input.fileHandleForWriting.close()
            process.waitUntilExit()
        }
        let pid = process.processIdentifier
        // env and setpriv exec into guestvault (same pid); wait until it holds the container open.
        let opened = waitUntil {
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
            return fds.contains { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) == state }
        }
        #expect(opened, "the child opened the container")
        var info = stat()
        #expect(stat("/proc/\(pid)/status", &info) == 0)
        #expect(info.st_uid == (optedOut ? OtherUser.uid : 0), "owner of /proc/\(pid)/status")
    }
}

