import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultSystem
import Testing

/// The behaviour every key vault backend must have. Each test runs once per backend:
/// the file vault and the PKCS#11 vault on a real SoftHSM2 token.
@Suite struct SharedVaultSuite {
    @Test(arguments: VaultBackendUnderTest.available)
    func kekIsDeterministicPerVMAndEpoch(_ backend: VaultBackendUnderTest) throws {
        let made = try backend.make()
        let vault = made.vault
        let a = UUID(), b = UUID()
        let k1 = try vault.kek(vm: a, epoch: 1)
        #expect(k1.count == 32)
        #expect(try vault.kek(vm: a, epoch: 1) == k1)
        #expect(try vault.kek(vm: a, epoch: 2) != k1, "changing the epoch rotates the KEK")
        #expect(try vault.kek(vm: b, epoch: 1) != k1, "another VM gets another KEK")
        let reopened = try made.reopen()
        #expect(try reopened.kek(vm: a, epoch: 1) == k1)
        #expect(reopened.rootKeyID == vault.rootKeyID)
    }

    @Test(arguments: VaultBackendUnderTest.available)
    func protectorSlotsOpenAndSayWhich(_ backend: VaultBackendUnderTest) throws {
        let made = try backend.make()
        let vault = made.vault
        let vm = UUID()
        let dek = try SecretBytes(randomCount: 32)
        let recovery = try X25519.PrivateKey()
        let passphrase = SecretBytes(copying: Array("recovery words".utf8))
        var set = try KeyProtectorSet([
            .wrapForVault(dek, vault: vault, vm: vm, epoch: 1),
            .wrapForRecipient(dek, recipient: recovery.publicKey, vm: vm),
            .wrapForPassphrase(dek, passphrase: passphrase, parameters: .testing),
        ])
        let byVault = try set.unwrap(vm: vm, with: UnlockCredentials(vault: vault))
        #expect(byVault.key == dek && byVault.slot == 0)
        let byRecipient = try set.unwrap(vm: vm, with: UnlockCredentials(recipientKeys: [recovery]))
        #expect(byRecipient.key == dek && byRecipient.slot == 1)
        let byPassphrase = try set.unwrap(vm: vm, with: UnlockCredentials(passphrase: passphrase))
        #expect(byPassphrase.key == dek && byPassphrase.slot == 2)

        let nothing = try #require(throws: VaultError.self) {
            try set.unwrap(vm: vm, with: UnlockCredentials(recipientKeys: [try X25519.PrivateKey()], passphrase: SecretBytes(copying: [1])))
        }
        #expect(nothing.code == .noUsableSlot)
        // Another VM's KEK does not open this VM's slot.
        let wrongVM = try #require(throws: VaultError.self) { try set.unwrap(vm: UUID(), with: UnlockCredentials(vault: vault)) }
        #expect(wrongVM.code == .corruptSlot)

        // Rotation: the vault slot moves to epoch 2, the DEK stays.
        let before = set
        #expect(try set.rewrapVaultSlots(key: dek, vault: vault, vm: vm, newEpoch: 2) == 1)
        #expect(set != before)
        guard case .vault(_, let epoch, _) = set.slots[0] else { Issue.record("slot 0 is not a vault slot"); return }
        #expect(epoch == 2)
        #expect(try set.unwrap(vm: vm, with: UnlockCredentials(vault: vault)).key == dek)
        #expect(set.slots[1] == before.slots[1] && set.slots[2] == before.slots[2])

        // The vault's own recipient key (stable across reopen) can hold a slot too.
        let recipient = try vault.recipientKey()
        #expect(try made.reopen().recipientKey().publicKey == recipient.publicKey)
        try set.add(.wrapForRecipient(dek, recipient: recipient.publicKey, vm: vm))
        #expect(try set.unwrap(vm: vm, with: UnlockCredentials(recipientKeys: [recipient])).slot == 3)
    }

    @Test(arguments: VaultBackendUnderTest.available)
    func slotLimits(_ backend: VaultBackendUnderTest) throws {
        let made = try backend.make()
        let vault = made.vault
        let vm = UUID()
        let dek = try SecretBytes(randomCount: 32)
        var set = try KeyProtectorSet([.wrapForVault(dek, vault: vault, vm: vm, epoch: 1)])
        for _ in 1..<KeyProtectorSet.maximumCount {
            try set.add(.wrapForRecipient(dek, recipient: try X25519.PrivateKey().publicKey, vm: vm))
        }
        let full = try #require(throws: VaultError.self) { try set.add(.wrapForVault(dek, vault: vault, vm: vm, epoch: 1)) }
        #expect(full.code == .slotLimit)
        for _ in 1..<KeyProtectorSet.maximumCount { try set.remove(at: 1) }
        let last = try #require(throws: VaultError.self) { try set.remove(at: 0) }
        #expect(last.code == .slotLimit)
        #expect(throws: VaultError.self) { try set.remove(at: 5) }
        #expect(try set.unwrap(vm: vm, with: UnlockCredentials(vault: vault)).key == dek)
    }

    @Test(arguments: VaultBackendUnderTest.available)
    func rollbackCountersAreDurableAndMonotonic(_ backend: VaultBackendUnderTest) throws {
        let made = try backend.make()
        let counters = made.vault.counters
        let vm = UUID(), other = UUID()
        #expect(try counters.check(vm: vm, generation: 1) == .unknown)
        try counters.record(vm: vm, generation: 5)
        #expect(try counters.check(vm: vm, generation: 5) == .current)
        #expect(try counters.check(vm: vm, generation: 6) == .current)
        #expect(try counters.check(vm: vm, generation: 4) == .rollback(latest: 5))
        try counters.record(vm: vm, generation: 3)
        #expect(try counters.latest(vm: vm) == 5, "recording an older generation never lowers the counter")
        try counters.record(vm: vm, generation: 9)
        #expect(try counters.check(vm: other, generation: 0) == .unknown)
        let reopened = try made.reopen()
        #expect(try reopened.counters.latest(vm: vm) == 9)
        #expect(try reopened.counters.check(vm: vm, generation: 8) == .rollback(latest: 9))
    }

    @Test(arguments: VaultBackendUnderTest.available)
    func aTornCounterRecordFallsBackToTheOtherOne(_ backend: VaultBackendUnderTest) throws {
        let made = try backend.make()
        let vm = UUID()
        try made.vault.counters.record(vm: vm, generation: 10)   // sequence 1, record B
        try made.vault.counters.record(vm: vm, generation: 11)   // sequence 2, record A
        let path = "\(made.vault.path)/counters/\(vm.uuidString.lowercased()).gen"
        var bytes = try FileSystem.readFile(path, limit: 1000)
        bytes[20] ^= 0xff   // tear the newer record (A)
        try FileSystem.writeAtomically(bytes, to: path)
        #expect(try made.reopen().counters.latest(vm: vm) == 10)
        bytes[64 + 20] ^= 0xff  // and now the other one too
        try FileSystem.writeAtomically(bytes, to: path)
        let error = try #require(throws: VaultError.self) { try made.reopen().counters.latest(vm: vm) }
        #expect(error.code == .corrupt && error.subject == path)
    }

    @Test(arguments: VaultBackendUnderTest.available)
    func statusDescribesTheVault(_ backend: VaultBackendUnderTest) throws {
        let made = try backend.make()
        let vault = made.vault
        let status = try vault.status()
        #expect(status.backend == backend.rawValue)
        #expect(status.rootKeyID == hexString(vault.rootKeyID))
        #expect(status.recipientPublicKey == nil)
        _ = try vault.recipientKey()
        #expect(try vault.status().recipientPublicKey?.count == 64)
    }
}
