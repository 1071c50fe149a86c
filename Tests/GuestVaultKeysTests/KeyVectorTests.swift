import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultSystem
import GuestVaultVectors
import Testing

/// Vectors/formats/keys.json, written by an independent Python implementation of
/// docs/KEYS.md: our code must produce and accept exactly these bytes.
@Suite struct KeyVectorTests {
    struct Vectors: Decodable {
        struct KEK: Decodable { let vm: String; let epoch: UInt32; let kek: String }
        struct VaultSlot: Decodable { let epoch: UInt32; let encoded: String }
        struct RecipientSlot: Decodable { let recipientPrivate, recipientPublic, ephemeralPrivate, ephemeralPublic, wrappingKey, encoded: String }
        struct PassphraseSlot: Decodable { let passphrase, salt: String; let log2N, r, p: Int; let encoded: String }
        let root, rootKeyID, dek, vm, slotList, rootKeyFilePlain, rootKeyFilePassphrase: String
        let keks: [KEK]
        let vaultSlot: VaultSlot
        let recipientSlot: RecipientSlot
        let passphraseSlot: PassphraseSlot
    }

    let v: Vectors
    init() throws {
        v = try JSONDecoder().decode(Vectors.self, from: VectorFiles.formatVectorData("keys.json"))
    }

    func hex(_ s: String) -> [UInt8] { bytes(fromHex: s)! }

    @Test func kekDerivationAndRootKeyID() throws {
        let dir = TemporaryDirectory()
        let vault = try KeyVault.createFileVault(at: dir.file("v"), importing: SecretBytes(copying: hex(v.root)))
        #expect(hexString(vault.rootKeyID) == v.rootKeyID)
        for k in v.keks {
            #expect(hexString(try vault.kek(vm: UUID(uuidString: k.vm)!, epoch: k.epoch).unsafeCopyOfBytes()) == k.kek, "\(k.vm) epoch \(k.epoch)")
        }
        print("vectors: keys.json: \(v.keks.count) KEK derivations checked")
    }

    @Test func slotsAreByteExact() throws {
        let dir = TemporaryDirectory()
        let vault = try KeyVault.createFileVault(at: dir.file("v"), importing: SecretBytes(copying: hex(v.root)))
        let vm = UUID(uuidString: v.vm)!
        let dek = SecretBytes(copying: hex(v.dek))
        let vaultSlot = try KeyProtector.wrapForVault(dek, vault: vault, vm: vm, epoch: v.vaultSlot.epoch)
        let recipient = try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: hex(v.recipientSlot.recipientPrivate)))
        let ephemeral = try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: hex(v.recipientSlot.ephemeralPrivate)))
        let recipientSlot = try KeyProtector.wrapForRecipient(dek, recipient: recipient.publicKey, vm: vm, ephemeral: ephemeral)
        let passphrase = SecretBytes(copying: Array(v.passphraseSlot.passphrase.utf8))
        let passphraseSlot = try KeyProtector.wrapForPassphrase(
            dek, passphrase: passphrase,
            parameters: .init(n: 1 << UInt64(v.passphraseSlot.log2N), r: UInt32(v.passphraseSlot.r), p: UInt32(v.passphraseSlot.p)),
            salt: hex(v.passphraseSlot.salt))
        let set = try KeyProtectorSet([vaultSlot, recipientSlot, passphraseSlot])
        #expect(hexString(set.encoded()) == v.slotList)
        #expect(hexString(try KeyProtectorSet([vaultSlot]).encoded().dropFirst()) == v.vaultSlot.encoded)
        #expect(hexString(try KeyProtectorSet([recipientSlot]).encoded().dropFirst()) == v.recipientSlot.encoded)
        #expect(hexString(try KeyProtectorSet([passphraseSlot]).encoded().dropFirst()) == v.passphraseSlot.encoded)

        let parsed = try KeyProtectorSet.parse(hex(v.slotList))
        #expect(parsed == set)
        #expect(try parsed.unwrap(vm: vm, with: UnlockCredentials(vault: vault)) == (dek, 0))
        #expect(try parsed.unwrap(vm: vm, with: UnlockCredentials(recipientKeys: [recipient])) == (dek, 1))
        #expect(try parsed.unwrap(vm: vm, with: UnlockCredentials(passphrase: passphrase)) == (dek, 2))
        print("vectors: keys.json: 3 slot kinds and a slot list checked")
    }

    @Test func rootKeyFilesAreByteExact() throws {
        let dir = TemporaryDirectory()
        let root = SecretBytes(copying: hex(v.root))
        try FileRootKey.write(root, to: dir.file("plain.key"), passphrase: nil)
        #expect(hexString(try FileSystem.readFile(dir.file("plain.key"), limit: 1000)) == v.rootKeyFilePlain)
        let passphrase = SecretBytes(copying: Array(v.passphraseSlot.passphrase.utf8))
        try FileRootKey.write(root, to: dir.file("pass.key"), passphrase: passphrase,
                              scrypt: .init(n: 1 << UInt64(v.passphraseSlot.log2N), r: UInt32(v.passphraseSlot.r), p: UInt32(v.passphraseSlot.p)),
                              salt: hex(v.passphraseSlot.salt))
        #expect(hexString(try FileSystem.readFile(dir.file("pass.key"), limit: 1000)) == v.rootKeyFilePassphrase)
        try FileSystem.writeAtomically(hex(v.rootKeyFilePassphrase), to: dir.file("given.key"))
        let opened = try FileRootKey.open(at: dir.file("given.key"), passphrase: passphrase)
        #expect(hexString(try opened.rootKeyID()) == v.rootKeyID)
    }

    /// Slot bytes are hostile input: every truncation and every single-byte change is
    /// either refused by the parser or refused when unwrapping, never a crash or a
    /// different key.
    @Test func slotListTruncationAndBitFlips() throws {
        let bytes = hex(v.slotList)
        for length in 0..<bytes.count {
            #expect(throws: VaultError.self, "length \(length)") { try KeyProtectorSet.parse(Array(bytes.prefix(length))) }
        }
        #expect(throws: VaultError.self) { try KeyProtectorSet.parse(bytes + [0]) }
        let dir = TemporaryDirectory()
        let vault = try KeyVault.createFileVault(at: dir.file("v"), importing: SecretBytes(copying: hex(v.root)))
        let vm = UUID(uuidString: v.vm)!
        let recipient = try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: hex(v.recipientSlot.recipientPrivate)))
        let dek = SecretBytes(copying: hex(v.dek))
        var accepted = 0, tried = 0
        // Vault and recipient slots (the passphrase slot's scrypt makes a full sweep slow; its wrap is covered by key-wrap tests).
        let end = 1 + 4 + Int(bytes[3]) << 8 + Int(bytes[4]) + 4 + 104
        for index in 0..<end {
            tried += 1
            var changed = bytes
            changed[index] ^= 0x01
            guard let set = try? KeyProtectorSet.parse(changed) else { continue }
            if let opened = try? set.unwrap(vm: vm, with: UnlockCredentials(vault: vault, recipientKeys: [recipient])), opened.key != dek {
                Issue.record("byte \(index): a changed slot opened to a different key")
            } else if let opened = try? set.unwrap(vm: vm, with: UnlockCredentials(vault: vault, recipientKeys: [recipient])),
                      opened.key == dek, !(changedSlotIndex(index, bytes) != opened.slot) {
                accepted += 1
            }
        }
        #expect(accepted == 0, "\(accepted) of \(tried) changed slot lists opened through the changed slot")
        print("bit flips: slot list: \(tried) mutations tried, \(accepted) accepted")
    }

    /// Which slot a byte offset falls in (slot 0 starts at offset 1).
    func changedSlotIndex(_ offset: Int, _ bytes: [UInt8]) -> Int {
        var start = 1, slot = 0
        while start < bytes.count {
            let end = start + 4 + (Int(bytes[start + 2]) << 8 | Int(bytes[start + 3]))
            if offset < end { return slot }
            start = end
            slot += 1
        }
        return -1
    }
}
