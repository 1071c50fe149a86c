import Foundation
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultSystem
import Testing

/// What only the file vault has: its files, modes, passphrase and corruption handling.
@Suite struct FileVaultTests {
    @Test func createsPrivateFilesAndDirectories() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("vault")
        let vault = try KeyVault.createFileVault(at: path)
        #expect(mode(of: path) == 0o700)
        #expect(mode(of: "\(path)/root.key") == 0o600)
        #expect(mode(of: "\(path)/vault.json") == 0o600)
        #expect(mode(of: "\(path)/counters") == 0o700)
        _ = try vault.recipientKey()
        #expect(mode(of: "\(path)/recipient.key") == 0o600)
        try vault.counters.record(vm: UUID(), generation: 1)
        let counterFiles = try FileManager.default.contentsOfDirectory(atPath: "\(path)/counters")
        #expect(counterFiles.count == 1 && mode(of: "\(path)/counters/\(counterFiles[0])") == 0o600)
    }

    /// Two openings of one vault (two processes: a long-running `serve`, a `put`): each
    /// sees what the other recorded, and neither overwrites the other's newest record.
    @Test func countersAreReadFromTheFileNotFromAnOldCopy() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("vault")
        let first = try KeyVault.createFileVault(at: path)
        let second = try KeyVault.open(at: path)
        let vm = UUID()
        try first.counters.record(vm: vm, generation: 3)
        #expect(try second.counters.latest(vm: vm) == 3)
        #expect(try first.counters.latest(vm: vm) == 3)
        try second.counters.record(vm: vm, generation: 7)
        #expect(try first.counters.check(vm: vm, generation: 5) == .rollback(latest: 7), "the first opening saw 3; the file says 7")
        try first.counters.record(vm: vm, generation: 8)
        #expect(try KeyVault.open(at: path).counters.latest(vm: vm) == 8)
        try second.counters.record(vm: vm, generation: 9)
        try first.counters.record(vm: vm, generation: 10)
        // Both records are valid and the newest is 10: no write went over the newest.
        #expect(try KeyVault.open(at: path).counters.latest(vm: vm) == 10)
    }

    /// The counter remembers the bytes it verified last, so that an unchanged file needs
    /// no MAC again; any change to the file (an older copy put back, a flipped byte) must
    /// still be read and verified (docs/PERFORMANCE.md, third round).
    @Test func aCounterFileChangedBehindAnOpenVaultIsReadAgain() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("vault")
        let vault = try KeyVault.createFileVault(at: path)
        let vm = UUID()
        let container = [UInt8](repeating: 0x42, count: 16)
        try vault.counters.record(vm: vm, container: container, generation: 3, durability: .deferred)
        try vault.counters.flush()
        let files = try FileManager.default.contentsOfDirectory(atPath: "\(path)/counters")
        let file = "\(path)/counters/\(try #require(files.first))"
        let atThree = try #require(FileManager.default.contents(atPath: file))
        try vault.counters.record(vm: vm, container: container, generation: 5, durability: .deferred)
        try vault.counters.record(vm: vm, container: container, generation: 6, durability: .deferred)
        try vault.counters.flush()
        #expect(try vault.counters.latest(vm: vm, container: container) == 6)
        // An older copy of the file put back: the open vault reads what the file says.
        try atThree.write(to: URL(fileURLWithPath: file))
        #expect(try vault.counters.latest(vm: vm, container: container) == 3)
        // A flipped byte in both records: refused, not answered from memory.
        var damaged = [UInt8](atThree)
        damaged[20] ^= 1
        damaged[84] ^= 1
        try Data(damaged).write(to: URL(fileURLWithPath: file))
        #expect(throws: VaultError.self) { try vault.counters.latest(vm: vm, container: container) }
        // The file restored: recording goes on from it.
        try atThree.write(to: URL(fileURLWithPath: file))
        try vault.counters.record(vm: vm, container: container, generation: 7, durability: .deferred)
        try vault.counters.flush()
        #expect(try KeyVault.open(at: path).counters.latest(vm: vm, container: container) == 7)
    }

    @Test func kekMatchesSoftwareKDFOfTheRootKey() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("vault")
        _ = try KeyVault.createFileVault(at: path)
        let rootBytes = try FileSystem.readFile("\(path)/root.key", limit: 1000)
        let root = SecretBytes(copying: rootBytes[8..<40])
        let vault = try KeyVault.open(at: path)
        let vm = UUID()
        let expected = try KBKDF.counterHMACSHA256(key: root, label: Array("GuestVault v1 KEK".utf8),
                                                   context: KeyLabels.kekContext(vm: vm, epoch: 3), outputByteCount: 32)
        #expect(try vault.kek(vm: vm, epoch: 3) == expected)
    }

    @Test func refusesAWorldReadableKeyFileAndSaysHowToFixIt() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("vault")
        _ = try KeyVault.createFileVault(at: path)
        try FileSystem.setMode("\(path)/root.key", 0o644)
        let before = dir.snapshot()
        let error = try #require(throws: VaultError.self) { try KeyVault.open(at: path) }
        #expect(error.code == .insecurePermissions)
        #expect(error.description.contains("chmod 600 \(path)/root.key"))
        #expect(dir.snapshot() == before)
        try FileSystem.setMode(path, 0o755)
        try FileSystem.setMode("\(path)/root.key", 0o600)
        let dirError = try #require(throws: VaultError.self) { try KeyVault.open(at: path) }
        #expect(dirError.code == .insecurePermissions && dirError.description.contains("chmod 700"))
    }

    @Test func refusesATruncatedOrChangedKeyFileAtEveryLength() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("vault")
        _ = try KeyVault.createFileVault(at: path)
        let keyPath = "\(path)/root.key"
        let original = try FileSystem.readFile(keyPath, limit: 1000)
        for length in 0..<original.count {
            try FileSystem.writeAtomically(Array(original.prefix(length)), to: keyPath)
            let error = try #require(throws: VaultError.self) { try KeyVault.open(at: path) }
            #expect(error.code == .corrupt, "length \(length): \(error)")
            #expect(error.subject == keyPath)
        }
        for index in original.indices {
            var changed = original
            changed[index] ^= 0x04
            try FileSystem.writeAtomically(changed, to: keyPath)
            #expect(throws: VaultError.self, "byte \(index)") { try KeyVault.open(at: path) }
        }
        try FileSystem.writeAtomically(original, to: keyPath)
        _ = try KeyVault.open(at: path)
    }

    @Test func passphraseProtectedVault() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("vault")
        let passphrase = SecretBytes(copying: Array("correct horse battery staple".utf8))
        let created = try KeyVault.createFileVault(at: path, passphrase: passphrase, scrypt: .testing)
        let vm = UUID()
        let kek = try created.kek(vm: vm, epoch: 1)
        let rootFile = try FileSystem.readFile("\(path)/root.key", limit: 1000)
        #expect(rootFile.count == 116)

        let before = dir.snapshot()
        let wrong = try #require(throws: VaultError.self) {
            try KeyVault.open(at: path, passphrase: SecretBytes(copying: Array("wrong".utf8)))
        }
        #expect(wrong.code == .wrongPassphrase && wrong.subject.hasSuffix("root.key"))
        let missing = try #require(throws: VaultError.self) { try KeyVault.open(at: path) }
        #expect(missing.code == .passphraseRequired)
        #expect(dir.snapshot() == before, "a failed open changed the vault")

        let reopened = try KeyVault.open(at: path, passphrase: passphrase)
        #expect(try reopened.kek(vm: vm, epoch: 1) == kek)
        #expect(try reopened.status().passphraseProtected)
    }

    @Test func initTwiceChangesNothing() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("vault")
        _ = try KeyVault.createFileVault(at: path)
        let before = dir.snapshot()
        let error = try #require(throws: VaultError.self) { try KeyVault.createFileVault(at: path) }
        #expect(error.code == .alreadyExists)
        #expect(dir.snapshot() == before)
        let notEmpty = dir.file("other")
        try FileManager.default.createDirectory(atPath: notEmpty, withIntermediateDirectories: false)
        _ = FileManager.default.createFile(atPath: "\(notEmpty)/x", contents: Data([1]))
        #expect(throws: VaultError.self) { try KeyVault.createFileVault(at: notEmpty) }
    }

    @Test func missingVaultIsNamed() throws {
        let dir = TemporaryDirectory()
        let error = try #require(throws: VaultError.self) { try KeyVault.open(at: dir.file("nope")) }
        #expect(error.code == .vaultNotFound && error.description.contains("vault init"))
    }

    @Test func rootKeyFromAnotherVaultIsRefused() throws {
        let dir = TemporaryDirectory()
        _ = try KeyVault.createFileVault(at: dir.file("a"))
        _ = try KeyVault.createFileVault(at: dir.file("b"))
        try FileSystem.writeAtomically(try FileSystem.readFile(dir.file("b/root.key"), limit: 1000), to: dir.file("a/root.key"))
        let error = try #require(throws: VaultError.self) { try KeyVault.open(at: dir.file("a")) }
        #expect(error.code == .corrupt && error.reason.contains("not the one"))
    }
}
