import Foundation
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import Testing

@Suite struct RecoveryKeyTests {
    static let vm = UUID(uuidString: "0b7c4a52-8d1e-4f63-9a20-5e6f7a8b9c0d")!

    @Test func aKeyFileRoundTripsPlainAndUnderAPassphrase() throws {
        let dir = TemporaryDirectory("recovery")
        let plain = try RecoveryKeyFile.create(at: dir.file("plain.key"), passphrase: nil)
        #expect(mode(of: dir.file("plain.key")) & 0o777 == 0o600)
        #expect(try RecoveryKeyFile.load(at: dir.file("plain.key"), passphrase: nil).publicKey == plain)
        #expect(try RecoveryKeyFile.needsPassphrase(at: dir.file("plain.key")) == false)

        let passphrase = SecretBytes(copying: Array("correct horse".utf8))
        let sealed = try RecoveryKeyFile.create(at: dir.file("sealed.key"), passphrase: passphrase, parameters: .testing)
        #expect(try RecoveryKeyFile.needsPassphrase(at: dir.file("sealed.key")))
        #expect(try RecoveryKeyFile.load(at: dir.file("sealed.key"), passphrase: passphrase).publicKey == sealed)
        // The private key is not in the file in the clear.
        let bytes = try FileSystem.readFile(dir.file("sealed.key"), limit: 4096)
        #expect(bytes.count == 104)

        let noPassphrase = #expect(throws: VaultError.self) { try RecoveryKeyFile.load(at: dir.file("sealed.key"), passphrase: nil) }
        #expect(noPassphrase?.code == .passphraseRequired)
        let wrong = #expect(throws: VaultError.self) {
            try RecoveryKeyFile.load(at: dir.file("sealed.key"), passphrase: SecretBytes(copying: Array("wrong".utf8)))
        }
        #expect(wrong?.code == .wrongPassphrase)
        // Never over an existing file.
        let again = #expect(throws: VaultError.self) { try RecoveryKeyFile.create(at: dir.file("plain.key"), passphrase: nil) }
        #expect(again?.code == .alreadyExists)
        #expect(try RecoveryKeyFile.load(at: dir.file("plain.key"), passphrase: nil).publicKey == plain)
    }

    @Test(arguments: [0, 5, 6, 20, 44])
    func aChangedByteOfAPlainKeyFileIsRefused(offset: Int) throws {
        let dir = TemporaryDirectory("recovery")
        _ = try RecoveryKeyFile.create(at: dir.file("k"), passphrase: nil)
        var bytes = try FileSystem.readFile(dir.file("k"), limit: 4096)
        bytes[offset] ^= 0x01
        try FileSystem.writeAtomically(bytes, to: dir.file("k"), mode: 0o600)
        let error = #expect(throws: VaultError.self) { try RecoveryKeyFile.load(at: dir.file("k"), passphrase: nil) }
        #expect(error?.code == .corrupt)
    }

    @Test func aChangedParameterOfASealedKeyFileIsRefused() throws {
        let dir = TemporaryDirectory("recovery")
        let passphrase = SecretBytes(copying: Array("pass".utf8))
        _ = try RecoveryKeyFile.create(at: dir.file("k"), passphrase: passphrase, parameters: .testing)
        var bytes = try FileSystem.readFile(dir.file("k"), limit: 4096)
        bytes[8] = 40   // log2 N out of range: refused before any scrypt runs
        try FileSystem.writeAtomically(bytes, to: dir.file("k"), mode: 0o600)
        let error = #expect(throws: VaultError.self) { try RecoveryKeyFile.load(at: dir.file("k"), passphrase: passphrase) }
        #expect(error?.code == .corrupt)
        bytes[8] = 10
        bytes[30] ^= 0x80   // the salt, which the tag covers
        try FileSystem.writeAtomically(bytes, to: dir.file("k"), mode: 0o600)
        let changed = #expect(throws: VaultError.self) { try RecoveryKeyFile.load(at: dir.file("k"), passphrase: passphrase) }
        #expect(changed?.code == .wrongPassphrase)
    }

    @Test func aKeyFileOthersCanReadOrASymlinkIsRefused() throws {
        let dir = TemporaryDirectory("recovery")
        _ = try RecoveryKeyFile.create(at: dir.file("k"), passphrase: nil)
        try FileSystem.setMode(dir.file("k"), 0o640)
        let readable = #expect(throws: VaultError.self) { try RecoveryKeyFile.load(at: dir.file("k"), passphrase: nil) }
        #expect(readable?.code == .insecurePermissions)
        try FileSystem.setMode(dir.file("k"), 0o600)
        try FileManager.default.createSymbolicLink(atPath: dir.file("link"), withDestinationPath: dir.file("k"))
        let link = #expect(throws: VaultError.self) { try RecoveryKeyFile.load(at: dir.file("link"), passphrase: nil) }
        #expect(link?.code == .insecurePermissions)
    }

    /// The bug: a recovery slot was written and no verb could use it.
    @Test func everyVerbOpensARecoverySlotWithTheRecoveryKeyAlone() throws {
        let dir = TemporaryDirectory("recovery-cli")
        let vault = dir.file("vault"), state = dir.file("vm.state"), key = dir.file("recovery.key")
        try Tool.ok(["vault", "init", "--vault", vault])
        let recipient = try Tool.ok(["recovery-key", "new", key]).text.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(recipient.count == 64)
        #expect(try Tool.ok(["recovery-key", "public", key]).text.trimmingCharacters(in: .whitespacesAndNewlines) == recipient)
        try Tool.ok(["create", "--vault", vault, "--vm", Self.vm.uuidString, "--recovery-recipient", recipient, state])
        try Tool.ok(["put", "--vault", vault, state, "uefi.nvram", "-"], input: Data("variables".utf8))

        // The vault is gone.
        try FileManager.default.removeItem(atPath: vault)
        #expect(try Tool.guestvault(["get", "--vault", vault, state, "uefi.nvram"]).status != 0)
        #expect(try Tool.ok(["get", "--recovery-key", key, state, "uefi.nvram"]).text == "variables")
        #expect(try Tool.ok(["list", "--recovery-key", key, "--json", state]).text.contains("\"verified\" : true"))
        try Tool.ok(["put", "--recovery-key", key, state, "tpm.ppi", "-"], input: Data("ppi".utf8))
        #expect(try Tool.ok(["get", "--recovery-key", key, state, "tpm.ppi"]).text == "ppi")

        // Another recovery key does not open it, and says which slots there are.
        let other = dir.file("other.key")
        try Tool.ok(["recovery-key", "new", other])
        let refused = try Tool.guestvault(["get", "--recovery-key", other, state, "uefi.nvram"])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("recipient"))
    }

    /// A verb that works with the vault alone refuses --recovery-key instead of
    /// ignoring it.
    @Test func aVerbThatUsesTheVaultAloneRefusesARecoveryKey() throws {
        let dir = TemporaryDirectory("recovery-cli")
        let vault = dir.file("vault"), state = dir.file("vm.state"), key = dir.file("recovery.key")
        try Tool.ok(["vault", "init", "--vault", vault])
        try Tool.ok(["recovery-key", "new", key])
        try Tool.ok(["create", "--vault", vault, "--vm", Self.vm.uuidString, state])
        for arguments in [["vault", "status", "--vault", vault, "--recovery-key", key],
                          ["rekey", "--vault", vault, "--recovery-key", key, state],
                          ["serve", "--vault", vault, "--recovery-key", key, state, "--server", "tcp:127.0.0.1:1", "--ctrl", "tcp:127.0.0.1:2"]] {
            let refused = try Tool.guestvault(arguments)
            #expect(refused.status != 0, "\(arguments)")
            #expect(refused.stderr.contains("--recovery-key is not used here"), "\(arguments): \(refused.stderr)")
        }
    }

    @Test func aPassphraseProtectedRecoveryKeyNeedsItsPassphrase() throws {
        let dir = TemporaryDirectory("recovery-cli")
        let vault = dir.file("vault"), state = dir.file("vm.state"), key = dir.file("recovery.key")
        try writeSecret("recovery passphrase\n", to: dir.file("pass"))
        try Tool.ok(["vault", "init", "--vault", vault])
        let recipient = try Tool.ok(["recovery-key", "new", "--passphrase-file", dir.file("pass"), key]).text
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try Tool.ok(["create", "--vault", vault, "--vm", Self.vm.uuidString, "--recovery-recipient", recipient, state])
        try Tool.ok(["put", "--vault", vault, state, "vm.id", "-"], input: Data("id".utf8))
        let without = try Tool.guestvault(["get", "--recovery-key", key, state, "vm.id"])
        #expect(without.status != 0)
        #expect(without.stderr.contains("--recovery-passphrase-file"))
        #expect(try Tool.ok(["get", "--recovery-key", key, "--recovery-passphrase-file", dir.file("pass"), state, "vm.id"]).text == "id")
    }

    @Test func rekeyToVaultGivesARecoveredContainerToANewVault() throws {
        let dir = TemporaryDirectory("recovery-rekey")
        let old = dir.file("old"), new = dir.file("new"), state = dir.file("vm.state"), key = dir.file("recovery.key")
        try Tool.ok(["vault", "init", "--vault", old])
        try Tool.ok(["vault", "init", "--vault", new])
        let recipient = try Tool.ok(["recovery-key", "new", key]).text.trimmingCharacters(in: .whitespacesAndNewlines)
        try Tool.ok(["create", "--vault", old, "--vm", Self.vm.uuidString, "--recovery-recipient", recipient, state])
        try Tool.ok(["put", "--vault", old, state, "uefi.nvram", "-"], input: Data("nvram".utf8))
        try FileManager.default.removeItem(atPath: old)

        #expect(try Tool.guestvault(["get", "--vault", new, state, "uefi.nvram"]).status != 0, "the new vault has no slot yet")
        let rekeyed = try Tool.ok(["rekey", "--recovery-key", key, "--to-vault", new, state])
        #expect(rekeyed.text.contains("recipient slot"))
        #expect(try Tool.ok(["get", "--vault", new, state, "uefi.nvram"]).text == "nvram")

        let info = try GuestStateContainer.open(at: state).info
        #expect(info.slots.map(\.kind) == ["vault", "recipient"], "the new vault's slot replaced the lost one; the recovery slot stays")
        let newVault = try KeyVault.open(at: new)
        #expect(try newVault.counters.latest(vm: Self.vm, container: info.containerID.bytes) == info.generation)
        #expect(try Tool.ok(["get", "--recovery-key", key, state, "uefi.nvram"]).text == "nvram")
    }
}
