import Foundation
import GuestVaultBackup
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import Synchronization
import Testing

@Suite struct BackupTests {
    static let nvIndex = "0x1500020"
    static let nvData = Array("NV written before the backup".utf8)

    /// The proof: the vault is lost entirely, and the VM comes back on a fresh
    /// vault from a backup (taken while `serve` ran) and the recovery key alone, with
    /// its NV contents and EKs (real libtpms, tpm2-tools).
    @Test(.enabled(if: Tool.hasTPM2Tools, "tpm2-tools or swtpm_ioctl (swtpm-tools) is not installed"))
    func aVMComesBackOnAFreshVaultFromABackupAndTheRecoveryKeyAlone() throws {
        let dir = TemporaryDirectory("backup-loss")
        let vault = dir.file("vault"), state = dir.file("vm1.state"), key = dir.file("recovery.key"), backup = dir.file("backup")
        try Tool.ok(["vault", "init", "--vault", vault])
        let recipient = try Tool.ok(["recovery-key", "new", key]).text.trimmingCharacters(in: .whitespacesAndNewlines)
        try Tool.ok(["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", "--ek", "--recovery-recipient", recipient, state])

        let ekBefore: [String]
        do {
            let server = try ServedTPM(["--vault", vault], state: state)
            try server.tool("tpm2_nvdefine", [Self.nvIndex, "-C", "o", "-s", "\(Self.nvData.count)", "-a", "ownerread|ownerwrite"])
            try server.tool("tpm2_nvwrite", [Self.nvIndex, "-C", "o", "-i", "-"], input: Data(Self.nvData))
            ekBefore = try ["0x81010001", "0x81010002"].map { try server.tool("tpm2_readpublic", ["-c", $0]).text }
            // The backup runs while serve holds the container open for writing.
            let backedUp = try Tool.ok(["backup", "--vault", vault, state, "--to", backup, "--json"])
            #expect(backedUp.text.contains("\"generation\""))
            try server.tool("tpm2_getrandom", ["8"])
            #expect(server.stop() == 0)
        }
        #expect(mode(of: backup) & 0o777 == 0o700)
        let manifest = try BackupManifest.parse(FileSystem.readFile(FileSystem.join(backup, BackupManifest.fileName), limit: 1 << 20), subject: "manifest")
        #expect(manifest.items.count == 1)
        #expect(mode(of: FileSystem.join(backup, manifest.items[0].file)) & 0o777 == 0o600)

        // The host, its vault and the container are gone.
        try FileManager.default.removeItem(atPath: vault)
        try FileManager.default.removeItem(atPath: state)
        let fresh = dir.file("fresh-vault"), vms = dir.file("vms")
        try Tool.ok(["vault", "init", "--vault", fresh])
        try FileManager.default.createDirectory(atPath: vms, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        let refused = try Tool.guestvault(["restore", "--vault", fresh, backup, "--to", vms])
        #expect(refused.status != 0, "the fresh vault alone cannot open the backup")
        #expect(!FileManager.default.fileExists(atPath: FileSystem.join(vms, "vm1.state")), "nothing was placed")

        let restored = try Tool.ok(["restore", "--vault", fresh, "--recovery-key", key, backup, "--to", vms])
        #expect(restored.text.contains("recipient slot"))
        let back = FileSystem.join(vms, "vm1.state")
        #expect(mode(of: back) & 0o777 == 0o600)
        let info = try GuestStateContainer.open(at: back).info
        #expect(info.slots.map(\.kind) == ["vault", "recipient"])
        #expect(try KeyVault.open(at: fresh).counters.latest(vm: info.vm, container: info.containerID.bytes) == info.generation,
                "the restore set the fresh vault's rollback counter")

        // The fresh vault alone now runs the VM: same NV, same EKs.
        let server = try ServedTPM(["--vault", fresh], state: back)
        #expect(try server.tool("tpm2_nvread", [Self.nvIndex, "-C", "o", "-s", "\(Self.nvData.count)"]).stdout == Data(Self.nvData))
        #expect(try ["0x81010001", "0x81010002"].map { try server.tool("tpm2_readpublic", ["-c", $0]).text } == ekBefore)
        #expect(server.stop() == 0)
    }

    /// An old backup is a rollback where the vault has seen newer: refused (nothing
    /// placed) unless --allow-rollback, which moves the container past what the vault
    /// has seen so it opens afterwards without any flag.
    @Test func anOldBackupIsRefusedAsARollbackUnlessAllowed() throws {
        let dir = TemporaryDirectory("backup-rollback")
        let vault = dir.file("vault"), state = dir.file("vm.state"), backup = dir.file("backup"), elsewhere = dir.file("elsewhere")
        try Tool.ok(["vault", "init", "--vault", vault])
        try Tool.ok(["create", "--vault", vault, "--vm", UUID().uuidString, state])
        try Tool.ok(["put", "--vault", vault, state, "uefi.nvram", "-"], input: Data("old".utf8))
        try Tool.ok(["backup", "--vault", vault, state, "--to", backup])
        try Tool.ok(["put", "--vault", vault, state, "uefi.nvram", "-"], input: Data("new".utf8))
        try Tool.ok(["put", "--vault", vault, state, "uefi.nvram", "-"], input: Data("newer".utf8))
        let latest = try GuestStateContainer.open(at: state).generation
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])

        let refused = try Tool.guestvault(["restore", "--vault", vault, backup, "--to", elsewhere])
        #expect(refused.status == Tool.rollbackExit, "\(refused.stderr)")
        #expect(refused.stderr.contains("older than generation \(latest)"))
        #expect(!FileManager.default.fileExists(atPath: FileSystem.join(elsewhere, "vm.state")))

        try Tool.ok(["restore", "--vault", vault, "--allow-rollback", backup, "--to", elsewhere])
        let restored = FileSystem.join(elsewhere, "vm.state")
        #expect(try GuestStateContainer.open(at: restored).generation > latest, "the counter moved forward, never back")
        #expect(try Tool.ok(["get", "--vault", vault, restored, "uefi.nvram"]).text == "old")
        // The live copy is now the older one for this vault: the authorized rollback is recorded.
        #expect(try Tool.guestvault(["get", "--vault", vault, state, "uefi.nvram"]).status == Tool.rollbackExit)
    }

    @Test func aDamagedOrRenamedCopyIsRefusedBeforeAnythingIsPlaced() throws {
        let dir = TemporaryDirectory("backup-hostile")
        let vault = dir.file("vault"), backup = dir.file("backup"), target = dir.file("target")
        try Tool.ok(["vault", "init", "--vault", vault])
        for name in ["a.state", "b.state"] {
            try Tool.ok(["create", "--vault", vault, "--vm", UUID().uuidString, dir.file(name)])
        }
        let made = try Tool.ok(["backup", "--vault", vault, dir.file("a.state"), dir.file("b.state"), "--to", backup, "--json"])
        #expect(made.text.contains("a.state") && made.text.contains("b.state"))
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        let manifestPath = FileSystem.join(backup, BackupManifest.fileName)
        let manifest = try BackupManifest.parse(FileSystem.readFile(manifestPath, limit: 1 << 20), subject: "m")

        // One bit of the second copy flipped: the whole restore is refused, nothing placed.
        let second = FileSystem.join(backup, manifest.items[1].file)
        var bytes = try FileSystem.readFile(second, limit: 64 << 20)
        bytes[100] ^= 1
        try FileSystem.writeAtomically(bytes, to: second, mode: 0o600)
        let refused = try Tool.guestvault(["restore", "--vault", vault, backup, "--to", target])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("SHA-256"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: target).isEmpty)

        // A manifest that names a file outside the backup directory is refused.
        var text = try String(contentsOfFile: manifestPath, encoding: .utf8)
        text = text.replacingOccurrences(of: manifest.items[0].file, with: "../../etc/passwd")
        try FileSystem.writeAtomically(Array(text.utf8), to: manifestPath, mode: 0o600)
        let outside = try Tool.guestvault(["restore", "--vault", vault, backup, "--to", target])
        #expect(outside.status != 0)
        #expect(outside.stderr.contains("not a plain file name"))

        // A second backup into the same directory is refused.
        #expect(try Tool.guestvault(["backup", "--vault", vault, dir.file("a.state"), "--to", backup]).status != 0)
    }

    @Test(.enabled(if: OtherUser.isAvailable, "needs root and setpriv"))
    func aBackupDirectoryAnotherUserControlsIsRefused() throws {
        let dir = TemporaryDirectory("backup-other")
        let vault = dir.file("vault"), state = dir.file("vm.state")
        try Tool.ok(["vault", "init", "--vault", vault])
        try Tool.ok(["create", "--vault", vault, "--vm", UUID().uuidString, state])
        let theirs = try OtherUser.directory("gv-backup")
        defer { try? FileManager.default.removeItem(atPath: theirs) }
        let refused = try Tool.guestvault(["backup", "--vault", vault, state, "--to", theirs])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("owned by uid \(OtherUser.uid)"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: theirs).isEmpty)
        // Nor a restore into it.
        try Tool.ok(["backup", "--vault", vault, state, "--to", dir.file("backup")])
        try FileManager.default.removeItem(atPath: state)
        let restore = try Tool.guestvault(["restore", "--vault", vault, dir.file("backup"), "--to", theirs])
        #expect(restore.status != 0)
        #expect(restore.stderr.contains("owned by uid \(OtherUser.uid)"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: theirs).isEmpty)
        // Nor through a symlink the other user planted.
        let link = FileSystem.join(theirs, "link")
        try OtherUser.symlink(dir.path, at: link)
        #expect(try Tool.guestvault(["backup", "--vault", vault, state, "--to", link]).status != 0)
    }

    /// A backup copy taken while a writer keeps committing opens at the generation it
    /// was taken at, and authenticates (library level, many commits racing the copy).
    @Test func aCopyTakenWhileAWriterCommitsIsConsistent() throws {
        let dir = TemporaryDirectory("backup-race")
        let vault = try KeyVault.createFileVault(at: dir.file("vault"))
        let state = dir.file("vm.state")
        let vm = UUID()
        let writer = try GuestStateContainer.create(at: state, vm: vm, vault: vault)
        try writer.write("tpm.permanent", [UInt8](repeating: 1, count: 3000))
        try writer.commit()
        let done = Mutex(false)
        nonisolated(unsafe) let writerInThread = writer
        let thread = Thread {
            var round: UInt8 = 0
            while !done.withLock({ $0 }) {
                round &+= 1
                try? writerInThread.write("tpm.permanent", [UInt8](repeating: round, count: 3000 + Int(round)))
                _ = try? writerInThread.commit()
            }
        }
        thread.start()
        var generations: [UInt64] = []
        for index in 0..<8 {
            let item = try ContainerBackup.copy(state, into: try makeDirectory(dir.file("b\(index)")), credentials: UnlockCredentials(vault: vault))
            generations.append(item.generation)
        }
        done.withLock { $0 = true }
        while !thread.isFinished { usleep(1000) }
        #expect(generations == generations.sorted())
        #expect(generations.last! > 2, "the writer committed while the copies were taken")
    }

    func makeDirectory(_ path: String) throws -> String {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        return path
    }
}
