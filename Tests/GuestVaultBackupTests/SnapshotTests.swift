import Foundation
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import Testing

@Suite struct SnapshotTests {
    static let nvIndex = "0x1500030"

    /// The proof: a VM whose NV changed after the snapshot gets the snapshot's
    /// NV back on revert (real libtpms through `guestvault serve` and tpm2-tools), the
    /// generation moves forward, and the revert is recorded.
    @Test(.enabled(if: Tool.hasTPM2Tools, "tpm2-tools or swtpm_ioctl (swtpm-tools) is not installed"))
    func revertingAVMWhoseNVChangedBringsTheSnapshotsNVBack() throws {
        let dir = TemporaryDirectory("snapshot-nv")
        let vault = dir.file("vault"), state = dir.file("vm.state")
        try Tool.ok(["vault", "init", "--vault", vault])
        try Tool.ok(["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", state])
        let before = Data("before the snapshot!".utf8), after = Data("written afterwards..".utf8)
        do {
            let server = try ServedTPM(["--vault", vault], state: state)
            try server.tool("tpm2_nvdefine", [Self.nvIndex, "-C", "o", "-s", "\(before.count)", "-a", "ownerread|ownerwrite"])
            try server.tool("tpm2_nvwrite", [Self.nvIndex, "-C", "o", "-i", "-"], input: before)
            #expect(server.stop() == 0)
        }
        // The writer lock: no snapshot while serve runs.
        do {
            let server = try ServedTPM(["--vault", vault], state: state)
            let locked = try Tool.guestvault(["snapshot", "create", "--vault", vault, state, "busy"])
            #expect(locked.status != 0)
            #expect(locked.stderr.contains("in use"))
            #expect(server.stop() == 0)
        }
        try Tool.ok(["snapshot", "create", "--vault", vault, state, "before-upgrade"])
        do {
            let server = try ServedTPM(["--vault", vault], state: state)
            try server.tool("tpm2_nvwrite", [Self.nvIndex, "-C", "o", "-i", "-"], input: after)
            #expect(try server.tool("tpm2_nvread", [Self.nvIndex, "-C", "o", "-s", "\(after.count)"]).stdout == after)
            #expect(server.stop() == 0)
        }
        let beforeRevert = try GuestStateContainer.open(at: state).generation
        let oldCopy = try FileSystem.readFile(state, limit: 64 << 20)

        let reverted = try Tool.ok(["snapshot", "revert", "--vault", vault, state, "before-upgrade", "--json"])
        let record = try JSONDecoder().decode(RevertRecord.self, from: reverted.stdout)
        #expect(record.fromGeneration == beforeRevert)
        #expect(record.generation == beforeRevert + 1, "a revert is a commit: the generation moves forward")
        #expect(record.revertedBy.contains("uid \(getuid())"))
        do {
            let server = try ServedTPM(["--vault", vault], state: state)
            #expect(try server.tool("tpm2_nvread", [Self.nvIndex, "-C", "o", "-s", "\(before.count)"]).stdout == before)
            #expect(server.stop() == 0)
        }
        let listed = try Tool.ok(["snapshot", "list", "--vault", vault, state])
        #expect(listed.text.contains("before-upgrade"))
        #expect(listed.text.contains("reverted to before-upgrade"))

        // Someone without keys puts the pre-revert file back: the vault refuses it.
        try FileSystem.writeAtomically(oldCopy, to: state, mode: 0o600)
        let replayed = try Tool.guestvault(["get", "--vault", vault, state, "tpm.permanent"])
        #expect(replayed.status == Tool.rollbackExit, "\(replayed.stderr)")
    }

    func makeContainer(_ dir: TemporaryDirectory) throws -> (KeyVault, GuestStateContainer) {
        let vault = try KeyVault.createFileVault(at: dir.file("vault"))
        let container = try GuestStateContainer.create(at: dir.file("vm.state"), vm: UUID(), vault: vault)
        try container.write("uefi.nvram", Array("vars v1".utf8))
        try container.write("tpm.permanent", Array("tpm v1".utf8))
        var sent = false
        try container.writeStream("vm.runtime") { buffer in
            guard !sent else { return 0 }
            sent = true
            for index in 0..<buffer.count { buffer[index] = UInt8(truncatingIfNeeded: index) }
            return buffer.count
        }
        try container.commit()
        return (vault, container)
    }

    @Test func aRevertRestoresEveryEntryRemovesLaterOnesAndKeepsSnapshots() throws {
        let dir = TemporaryDirectory("snapshot")
        let (vault, container) = try makeContainer(dir)
        let runtime = try container.read("vm.runtime")
        let info = try container.createSnapshot("s1", takenBy: "test")
        #expect(info.entries == ["tpm.permanent", "uefi.nvram", "vm.runtime"])
        #expect(info.generation == 2)
        try container.write("uefi.nvram", Array("vars v2".utf8))
        try container.write("tpm.ppi", Array("added later".utf8))
        try container.remove("tpm.permanent")
        try container.commit()

        let record = try container.revert(toSnapshot: "s1", revertedBy: "test")
        #expect(record.snapshotGeneration == 2)
        #expect(container.stateEntryNames == ["tpm.permanent", "uefi.nvram", "vm.runtime"])
        #expect(try container.read("uefi.nvram") == Array("vars v1".utf8))
        #expect(try container.read("tpm.permanent") == Array("tpm v1".utf8))
        #expect(try container.read("vm.runtime") == runtime)
        #expect(try container.snapshots().map(\.name) == ["s1"])
        #expect(try container.revertLog() == [record])
        #expect(try vault.counters.latest(vm: container.vm, container: container.containerID) == container.generation)

        // Reopened, the same holds (all of it was committed).
        let reopened = try GuestStateContainer.open(at: container.path)
        try reopened.unlock(with: UnlockCredentials(vault: vault))
        #expect(try reopened.revertLog() == [record])
        #expect(try reopened.read("uefi.nvram") == Array("vars v1".utf8))

        try container.deleteSnapshot("s1")
        #expect(container.entryNames.allSatisfy { !$0.hasPrefix("snapshot/s1") })
        #expect(try container.snapshots().isEmpty)
        let gone = #expect(throws: ContainerError.self) { try container.revert(toSnapshot: "s1", revertedBy: "test") }
        #expect(gone?.code == .noSuchEntry)
    }

    @Test(arguments: ["", ".hidden", "a/b", "with space", String(repeating: "x", count: 65), "é"])
    func badSnapshotNamesAreRefused(name: String) throws {
        let dir = TemporaryDirectory("snapshot")
        let (_, container) = try makeContainer(dir)
        let error = #expect(throws: ContainerError.self) { try container.createSnapshot(name, takenBy: "test") }
        #expect(error?.code == .invalidName)
        #expect(!container.hasPendingChanges)
    }

    @Test func aSecondSnapshotOfTheSameNameIsRefused() throws {
        let dir = TemporaryDirectory("snapshot")
        let (_, container) = try makeContainer(dir)
        try container.createSnapshot("s", takenBy: "test")
        let generation = container.generation
        let error = #expect(throws: ContainerError.self) { try container.createSnapshot("s", takenBy: "test") }
        #expect(error?.code == .alreadyExists)
        #expect(container.generation == generation)
    }

    /// The revert log is a sealed entry like any other (its bytes are not in the file in
    /// the clear; the commit's authenticator covers it).
    @Test func theRevertRecordIsSealed() throws {
        let dir = TemporaryDirectory("snapshot")
        let (vault, container) = try makeContainer(dir)
        try container.createSnapshot("s", takenBy: "test")
        try container.revert(toSnapshot: "s", revertedBy: "alice")
        let path = container.path
        let bytes = try FileSystem.readFile(path, limit: 64 << 20)
        let needle = Array("alice".utf8)
        #expect(bytes.firstRange(of: needle) == nil, "the record is sealed, not in the clear")
        let reopened = try GuestStateContainer.open(at: path)
        try reopened.unlock(with: UnlockCredentials(vault: vault))
        #expect(try reopened.revertLog().map(\.revertedBy) == ["alice"])
    }
}
