import Foundation
import GuestVaultCore
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultTPMContainer
import Testing

/// The plaintext VARS file on tmpfs: made from the container, sealed back on change and
/// at the end, then removed; hostile paths refused.
@Suite(.enabled(if: Peers.ovmf, "needs Debian's ovmf package (apt install ovmf)"))
struct UEFIVarsFileTests {
    /// A VM whose container holds OVMF's plain template as uefi.vars, opened for writing.
    static func storage(_ vm: TestVM) throws -> ContainerTPMStorage {
        let container = try GuestStateContainer.open(at: vm.state, access: .readWrite)
        _ = try container.unlock(with: UnlockCredentials(vault: KeyVault.open(at: vm.vault)))
        return ContainerTPMStorage(container: container)
    }

    static let template = [UInt8](FileManager.default.contents(atPath: "/usr/share/OVMF/OVMF_VARS_4M.fd") ?? Data())

    @Test func createSeedsTheTemplateAndRefusesWhatIsNotAVariableStore() throws {
        let vm = try TestVM(["--uefi", "--secure-boot"])
        #expect(try vm.entry("uefi.vars") == FileManager.default.contents(atPath: "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"))
        let show = try Run.guestvault(["uefi", "show", "--vault", vm.vault, vm.state])
        #expect(show.stdout.contains("SecureBoot          1 (enabled)"), "\(show.stdout.prefix(600))")
        #expect(show.stdout.contains("Microsoft Corporation UEFI CA 2011"))

        let bogus = vm.dir.file("bogus.fd")
        _ = FileManager.default.createFile(atPath: bogus, contents: Data(repeating: 0x5a, count: 4096))
        let other = vm.dir.file("other.state")
        let refused = try Run.guestvault(["create", "--vault", vm.vault, "--vm", vm.vm, "--uefi", "--uefi-template", bogus, other])
        #expect(refused.status != 0 && refused.stderr.contains("not an OVMF variable store"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: other), "nothing half-made")
        let usage = try Run.guestvault(["create", "--vault", vm.vault, "--vm", vm.vm, "--secure-boot", other])
        #expect(usage.status != 0 && usage.stderr.contains("go with --uefi"))
    }

    @Test func aChangedFileIsSealedAndTheEndRemovesIt() throws {
        let vm = try TestVM(["--uefi"])
        let memory = MemoryDirectory()
        let storage = try Self.storage(vm)
        let vars = try UEFIVarsFile(path: memory.file("vars.fd"), storage: storage)
        #expect(vars.leftover == .none)
        #expect(mode(of: vars.path) == 0o600)
        #expect(FileManager.default.contents(atPath: vars.path).map { [UInt8]($0) } == Self.template)
        #expect(try vars.sealIfChanged() == false)

        // What QEMU does when the guest sets a variable: a write into the pflash file.
        let handle = try #require(FileHandle(forUpdatingAtPath: vars.path))
        try handle.seek(toOffset: 0x2_0000)
        try handle.write(contentsOf: Data("guest wrote this".utf8))
        try handle.close()
        let changed = try #require(FileManager.default.contents(atPath: vars.path))
        #expect(try vars.sealIfChanged() == true)
        print("trusted launch: sealing a changed \(changed.count)-byte VARS file (write and commit the entry; reading and hashing it not counted): \(Int(vars.statistics.lastSealMicroseconds)) µs")
        #expect(try vars.sealIfChanged() == false)
        #expect(try storage.readEntry(UEFIVarsFile.entryName).map { Data($0) } == changed)
        try vars.finish()
        #expect(!FileManager.default.fileExists(atPath: vars.path), "no plaintext after the end")
        #expect(try storage.readEntry(UEFIVarsFile.entryName).map { Data($0) } == changed)
    }

    @Test func aLeftoverOfOursFromAKilledRunIsSealedInAndKeptInPlace() throws {
        let vm = try TestVM(["--uefi"])
        let memory = MemoryDirectory()
        var leftover = Self.template
        leftover[0x2_0000] ^= 0xff
        let path = memory.file("vars.fd")
        try DurableFile.write(leftover, to: path)
        let storage = try Self.storage(vm)
        let vars = try UEFIVarsFile(path: path, storage: storage)
        #expect(vars.leftover == .recovered)
        #expect(try storage.readEntry(UEFIVarsFile.entryName) == leftover)
        #expect(FileManager.default.contents(atPath: path).map { [UInt8]($0) } == leftover)
        try vars.finish()
    }

    @Test func aFileThatChangedSizeIsNotSealed() throws {
        let vm = try TestVM(["--uefi"])
        let memory = MemoryDirectory()
        let storage = try Self.storage(vm)
        let vars = try UEFIVarsFile(path: memory.file("vars.fd"), storage: storage)
        #expect(truncate(vars.path, 4096) == 0)
        #expect { try vars.sealIfChanged() } throws: { ($0 as? UEFIVarsError)?.code == .uefiVarsChanged }
        #expect(try storage.readEntry(UEFIVarsFile.entryName) == Self.template)
        try? vars.finish()
        #expect(!FileManager.default.fileExists(atPath: vars.path))
    }

    @Test func aDirectoryOnDiskIsRefused() throws {
        let vm = try TestVM(["--uefi"])
        // The test directory is on the root file system here; on a machine whose /tmp is
        // tmpfs there is nothing to refuse.
        guard try !FileSystem.isMemoryBacked(vm.dir.path) else { return }
        let storage = try Self.storage(vm)
        let path = vm.dir.file("vars.fd")
        #expect { try UEFIVarsFile(path: path, storage: storage) } throws: { ($0 as? UEFIVarsError)?.code == .uefiVarsUnsafePath }
        #expect(!FileManager.default.fileExists(atPath: path), "no plaintext on disk")
    }

    @Test(.enabled(if: OtherUser.isAvailable, "needs setpriv and the nobody user"))
    func anotherUsersSymlinkOrFileIsRefusedAndLeftAlone() throws {
        let vm = try TestVM(["--uefi"])
        let storage = try Self.storage(vm)
        // /dev/shm is world-writable (sticky): another user may place things there first.
        let link = "/dev/shm/gv-trusted-link-\(UUID().uuidString.prefix(8)).fd"
        let target = vm.dir.file("target")
        _ = FileManager.default.createFile(atPath: target, contents: Data("untouched".utf8))
        try OtherUser.symlink(target, at: link)
        defer { try? FileManager.default.removeItem(atPath: link) }
        #expect { try UEFIVarsFile(path: link, storage: storage) } throws: { ($0 as? UEFIVarsError)?.code == .uefiVarsUnsafePath }
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: link)) == target, "the symlink is left alone")
        #expect(FileManager.default.contents(atPath: target) == Data("untouched".utf8))

        let planted = "/dev/shm/gv-trusted-planted-\(UUID().uuidString.prefix(8)).fd"
        defer { try? FileManager.default.removeItem(atPath: planted) }
        #expect(try OtherUser.run(["/usr/bin/dd", "if=/usr/share/OVMF/OVMF_VARS_4M.fd", "of=\(planted)", "status=none"]).status == 0)
        #expect { try UEFIVarsFile(path: planted, storage: storage) } throws: { ($0 as? UEFIVarsError)?.code == .uefiVarsUnsafePath }
        #expect(try storage.readEntry(UEFIVarsFile.entryName) == Self.template, "another user's file is never sealed in")
    }

    @Test func aServeThatCannotListenLeavesNoPlaintext() throws {
        let vm = try TestVM(["--uefi"])
        let memory = MemoryDirectory()
        let vars = memory.file("vars.fd")
        // The VARS file is made before the control socket (so QEMU finds it when the
        // socket appears); a control address that cannot be bound must not leave it.
        let failed = try Run.guestvault(["serve", "--vault", vm.vault, vm.state, "--ctrl", "unix:\(vm.dir.file("no-such-dir/ctrl.sock"))",
                                         "--uefi-vars", vars])
        #expect(failed.status != 0, "\(failed.stderr)")
        #expect(!FileManager.default.fileExists(atPath: vars), "no plaintext after a failed start")
        #expect(try vm.entry("uefi.vars").map { [UInt8]($0) } == Self.template)
    }
}
