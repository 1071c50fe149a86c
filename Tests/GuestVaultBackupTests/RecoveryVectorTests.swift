import Foundation
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultVectors
import Testing

/// Vectors/formats/recovery: a container with a vault slot and a recovery (recipient)
/// slot, and the recovery key that opens it, as a plain and as a passphrase-protected
/// key file (docs/KEYS.md §6). Set GUESTVAULT_WRITE_VECTORS=1 to write them anew.
@Suite struct RecoveryVectorTests {
    struct Manifest: Codable {
        struct Entry: Codable { let name: String; let size: Int; let sha256: String }
        let source: String
        let rootKey: String
        let vm: String
        let recoveryPrivateKey: String
        let recoveryPublicKey: String
        let passphrase: String
        let container: String
        let plainKeyFile: String
        let passphraseKeyFile: String
        let generation: UInt64
        /// The slot the recovery key opens.
        let recoverySlot: Int
        let entries: [Entry]
    }

    static let root = SecretBytes(copying: (0..<32).map { UInt8(0x30 + $0) })
    static let recoveryKey = SecretBytes(copying: (0..<32).map { UInt8(0x70 &+ $0 &* 3) })
    static let vm = UUID(uuidString: "3c9e1a7d-5b2f-4e80-9d41-7a6b5c4d3e2f")!
    static let passphrase = "recovery vector passphrase"

    @Test(.enabled(if: ProcessInfo.processInfo.environment["GUESTVAULT_WRITE_VECTORS"] == "1"))
    func writeVectors() throws {
        let out = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Vectors/formats/recovery").path
        try? FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let dir = TemporaryDirectory("recovery-vectors")
        let vault = try KeyVault.createFileVault(at: dir.file("vault"), importing: Self.root)
        let key = try X25519.PrivateKey(rawRepresentation: Self.recoveryKey)
        let entries: [String: [UInt8]] = [
            "tpm.permanent": (0..<1300).map { UInt8(truncatingIfNeeded: $0 &* 11 &+ 5) },
            "uefi.nvram": (0..<256).map { UInt8(truncatingIfNeeded: $0 &* 17) },
        ]
        let path = dir.file("recovery-slot.state")
        do {
            let container = try GuestStateContainer.create(at: path, vm: Self.vm, vault: vault, extraSlots: [{ dek in
                try .wrapForRecipient(dek, recipient: key.publicKey, vm: Self.vm)
            }])
            for (name, bytes) in entries { try container.write(name, bytes) }
            try container.commit()
        }
        let info = try GuestStateContainer.open(at: path).info
        let bytes = Array(try FileSystem.readFile(path, limit: 64 << 20)[0..<(4096 + Int(info.logBytes))])
        try FileSystem.writeAtomically(bytes, to: "\(out)/recovery-slot.state", mode: 0o644)
        try RecoveryKeyFile.write(key, to: dir.file("plain.key"), passphrase: nil)
        try RecoveryKeyFile.write(key, to: dir.file("passphrase.key"), passphrase: SecretBytes(copying: Array(Self.passphrase.utf8)), parameters: .testing)
        for name in ["plain.key", "passphrase.key"] {
            try FileSystem.writeAtomically(FileSystem.readFile(dir.file(name), limit: 4096), to: "\(out)/recovery-\(name)", mode: 0o644)
        }
        let manifest = Manifest(
            source: "GuestVault docs/KEYS.md §4 (recipient slot) and §6 (recovery key file); written by Tests/GuestVaultBackupTests/RecoveryVectorTests.swift",
            rootKey: hexString(Self.root.unsafeCopyOfBytes()), vm: Self.vm.uuidString.lowercased(),
            recoveryPrivateKey: hexString(Self.recoveryKey.unsafeCopyOfBytes()), recoveryPublicKey: hexString(key.publicKey.rawRepresentation),
            passphrase: Self.passphrase, container: "recovery-slot.state", plainKeyFile: "recovery-plain.key",
            passphraseKeyFile: "recovery-passphrase.key", generation: info.generation, recoverySlot: 1,
            entries: try entries.keys.sorted().map { Manifest.Entry(name: $0, size: entries[$0]!.count, sha256: hexString(try SHA256.hash(entries[$0]!))) })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try FileSystem.writeAtomically(Array(try encoder.encode(manifest)) + [0x0a], to: "\(out)/recovery.json", mode: 0o644)
    }

    /// A vector file copied into a private temporary directory (key files must be 0600).
    func privateCopy(_ name: String, in dir: TemporaryDirectory) throws -> String {
        let path = dir.file(name)
        try FileSystem.writeAtomically(Array(try VectorFiles.formatVectorData("recovery/\(name)")), to: path, mode: 0o600)
        return path
    }

    @Test func theRecoveryKeyFilesOpenTheRecoverySlotOfTheVectorContainer() throws {
        let manifest = try JSONDecoder().decode(Manifest.self, from: VectorFiles.formatVectorData("recovery/recovery.json"))
        let dir = TemporaryDirectory("recovery-vectors")
        let plain = try RecoveryKeyFile.load(at: privateCopy(manifest.plainKeyFile, in: dir), passphrase: nil)
        let sealed = try RecoveryKeyFile.load(at: privateCopy(manifest.passphraseKeyFile, in: dir),
                                              passphrase: SecretBytes(copying: Array(manifest.passphrase.utf8)))
        for key in [plain, sealed] {
            #expect(hexString(key.rawRepresentation.unsafeCopyOfBytes()) == manifest.recoveryPrivateKey)
            #expect(hexString(key.publicKey.rawRepresentation) == manifest.recoveryPublicKey)
        }
        let container = try GuestStateContainer.open(at: privateCopy(manifest.container, in: dir))
        #expect(container.vm.uuidString.lowercased() == manifest.vm)
        #expect(container.generation == manifest.generation)
        // No vault at all: the recovery key alone opens it, through the recipient slot.
        #expect(try container.unlock(with: UnlockCredentials(recipientKeys: [sealed])) == manifest.recoverySlot)
        #expect(container.entryNames == manifest.entries.map(\.name))
        for entry in manifest.entries {
            let bytes = try container.read(entry.name)
            #expect(bytes.count == entry.size)
            #expect(hexString(try SHA256.hash(bytes)) == entry.sha256, "\(entry.name)")
        }
    }

    @Test func anotherRecoveryKeyDoesNotOpenTheVectorContainer() throws {
        let manifest = try JSONDecoder().decode(Manifest.self, from: VectorFiles.formatVectorData("recovery/recovery.json"))
        let dir = TemporaryDirectory("recovery-vectors")
        let container = try GuestStateContainer.open(at: privateCopy(manifest.container, in: dir))
        let error = #expect(throws: VaultError.self) { try container.unlock(with: UnlockCredentials(recipientKeys: [X25519.PrivateKey()])) }
        #expect(error?.code == .noUsableSlot)
    }

    @Test func theVectorKeyFilesAreRefusedWithAWrongPassphraseOrAFlippedBit() throws {
        let manifest = try JSONDecoder().decode(Manifest.self, from: VectorFiles.formatVectorData("recovery/recovery.json"))
        let dir = TemporaryDirectory("recovery-vectors")
        let sealed = try privateCopy(manifest.passphraseKeyFile, in: dir)
        let wrong = #expect(throws: VaultError.self) { try RecoveryKeyFile.load(at: sealed, passphrase: SecretBytes(copying: Array("nope".utf8))) }
        #expect(wrong?.code == .wrongPassphrase)
        let plain = try privateCopy(manifest.plainKeyFile, in: dir)
        var bytes = try FileSystem.readFile(plain, limit: 4096)
        bytes[12] ^= 0x10
        try FileSystem.writeAtomically(bytes, to: plain, mode: 0o600)
        let flipped = #expect(throws: VaultError.self) { try RecoveryKeyFile.load(at: plain, passphrase: nil) }
        #expect(flipped?.code == .corrupt)
    }
}
