import Foundation
import GuestVaultCore
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import Testing

/// Issue 13.3: another local user who can write the container's directory must not make
/// a writer (put, serve, rekey: `open(…, .readWrite)`) write through a symlink. The
/// container is made by root in a directory that user owns; the attacker then swaps the
/// lock file, or the container itself, for a symlink to a file of root's.
@Suite(.enabled(if: OtherUser.isAvailable, "needs root and setpriv"))
struct PathHardeningTests {
    struct Setup {
        let attackerDirectory: String
        let rootFiles = TemporaryDirectory("guestvault-root")
        let vault: KeyVault
        let statePath: String
        let precious: String
        let preciousBytes = Array("root's file: must stay as it is\n".utf8)

        init() throws {
            attackerDirectory = try OtherUser.directory()
            vault = try KeyVault.createFileVault(at: rootFiles.file("vault"))
            statePath = "\(attackerDirectory)/vm1.state"
            precious = rootFiles.file("precious")
            try FileSystem.writeAtomically(preciousBytes, to: precious, mode: 0o600)
            let container = try GuestStateContainer.create(at: statePath, vm: UUID(), vault: vault)
            try container.write("tpm.permanent", [1, 2, 3])
            try container.commit()
        }

        func cleanUp() { try? FileManager.default.removeItem(atPath: attackerDirectory) }
    }

    @Test func aSymlinkedLockFileIsRefusedAndItsTargetUntouched() throws {
        let s = try Setup()
        defer { s.cleanUp() }
        let lock = s.statePath + ".lock"
        #expect(try OtherUser.run(["/bin/rm", "-f", lock]).status == 0)
        try OtherUser.symlink(s.precious, at: lock)

        let error = try #require(throws: ContainerError.self) { try GuestStateContainer.open(at: s.statePath, access: .readWrite) }
        #expect(error.category == .permission, "\(error)")
        #expect(error.description.contains(lock), "the message names the lock file: \(error)")
        let cause = try #require(error.underlying as? SystemError)
        #expect(cause.errno == ELOOP)
        #expect(try FileSystem.readFile(s.precious, limit: 4096) == s.preciousBytes, "root's file was not written through the symlink")
        // Readers take no lock and are not affected.
        #expect(try GuestStateContainer.open(at: s.statePath).generation == 2)
    }

    @Test func aLockFileThatIsNotRegularOrIsOthersIsRefused() throws {
        let s = try Setup()
        defer { s.cleanUp() }
        let lock = s.statePath + ".lock"
        #expect(try OtherUser.run(["/bin/rm", "-f", lock]).status == 0)
        #expect(try OtherUser.run(["/usr/bin/mkfifo", lock]).status == 0)
        #expect(throws: ContainerError.self) { try GuestStateContainer.open(at: s.statePath, access: .readWrite) }
        #expect(try OtherUser.run(["/bin/rm", "-f", lock]).status == 0)
        #expect(try OtherUser.run(["/usr/bin/touch", lock]).status == 0)
        let error = try #require(throws: ContainerError.self) { try GuestStateContainer.open(at: s.statePath, access: .readWrite) }
        #expect(error.category == .permission, "a lock file of another user: \(error)")
    }

    @Test func aSymlinkedContainerIsRefusedForReadingAndWriting() throws {
        let s = try Setup()
        defer { s.cleanUp() }
        #expect(try OtherUser.run(["/bin/mv", s.statePath, "\(s.attackerDirectory)/moved"]).status == 0)
        try OtherUser.symlink(s.precious, at: s.statePath)
        for access in [GuestStateContainer.Access.readOnly, .readWrite] {
            let error = try #require(throws: ContainerError.self) { try GuestStateContainer.open(at: s.statePath, access: access) }
            #expect((error.underlying as? SystemError)?.errno == ELOOP, "\(error)")
        }
        #expect(try FileSystem.readFile(s.precious, limit: 4096) == s.preciousBytes)
    }
}
