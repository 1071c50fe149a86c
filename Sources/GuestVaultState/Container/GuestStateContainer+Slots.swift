import GuestVaultCore
public import GuestVaultCrypto
public import GuestVaultKeys

extension GuestStateContainer {
    /// Re-wraps the vault slots under the VM's KEK at `epoch` (KEK rotation) and commits.
    /// The sealed entries are not touched.
    @discardableResult
    public func rotateKEK(to epoch: UInt32) throws -> UInt64 {
        let keys = try unlockedKeys()
        guard let vault else { throw ContainerError(.notUnlocked, subject: path, reason: "KEK rotation needs the container unlocked with its vault") }
        var slots = scan.manifest.slots
        let count = try slots.rewrapVaultSlots(key: keys.dek, vault: vault, vm: vm, newEpoch: epoch)
        guard count > 0 else { throw ContainerError(.notUnlocked, subject: path, reason: "no slot belongs to vault \(vault.path)") }
        return try commitSlots(slots)
    }

    /// Adds a key protector slot made from the DEK and commits.
    @discardableResult
    public func addSlot(_ make: (SecretBytes) throws -> KeyProtector) throws -> UInt64 {
        let keys = try unlockedKeys()
        var slots = scan.manifest.slots
        try slots.add(make(keys.dek))
        return try commitSlots(slots)
    }

    /// Removes slot `index` and commits (never the last slot).
    @discardableResult
    public func removeSlot(at index: Int) throws -> UInt64 {
        _ = try unlockedKeys()
        var slots = scan.manifest.slots
        try slots.remove(at: index)
        return try commitSlots(slots)
    }

    /// Replaces the DEK: every entry is re-encrypted under a new random DEK into a new
    /// file that replaces this one atomically. Vault and recipient slots are re-made for
    /// the new key; passphrase slots are re-made only if `passphrase` is given, otherwise
    /// dropped. Returns the new generation.
    @discardableResult
    public func rotateDEK(passphrase: SecretBytes? = nil) throws -> UInt64 {
        let old = try unlockedKeys()
        guard let vault else { throw ContainerError(.notUnlocked, subject: path, reason: "DEK rotation needs the container unlocked with its vault") }
        guard pending.isEmpty else { throw ContainerError(.readOnly, subject: path, reason: "commit or discard staged changes first") }
        let next = try nextGeneration()
        let dek = try SecretBytes(randomCount: 32)
        var newSlots: [KeyProtector] = []
        for slot in scan.manifest.slots.slots {
            switch slot {
            case .vault(let id, let epoch, _) where id == vault.rootKeyID:
                newSlots.append(try .wrapForVault(dek, vault: vault, vm: vm, epoch: epoch))
            case .vault:
                break
            case .recipient(let recipient, _, _):
                newSlots.append(try .wrapForRecipient(dek, recipient: X25519.PublicKey(rawRepresentation: recipient), vm: vm))
            case .passphrase(let log2N, let r, let p, _, _):
                if let passphrase {
                    guard log2N < 64 else {
                        throw ContainerError(.malformed, subject: path, reason: "a passphrase slot's cost 2^\(log2N) is out of range")
                    }
                    newSlots.append(try .wrapForPassphrase(dek, passphrase: passphrase,
                                                           parameters: .init(n: 1 << UInt64(log2N), r: UInt32(r), p: UInt32(p))))
                }
            }
        }
        let keys = try EntryKeys(dek: dek, containerID: scan.superblock.containerID)
        try rewrite(slots: KeyProtectorSet(newSlots), newKeys: keys, oldKeys: old, generation: next)
        return generation
    }

    /// Commits the same entries with new slots.
    func commitSlots(_ slots: KeyProtectorSet) throws -> UInt64 {
        let keys = try unlockedKeys()
        guard access == .readWrite else { throw ContainerError(.readOnly, subject: path, reason: "opened read-only") }
        guard pending.isEmpty else { throw ContainerError(.readOnly, subject: path, reason: "commit or discard staged changes first") }
        let next = try nextGeneration()
        let commitOffset = appendPoint
        let commit = try CommitRecord(generation: next, previous: scan.commitOffset, slots: slots,
                                      entries: scan.manifest.entries, keys: keys, superblockBytes: scan.superblockBytes)
        try durablyAppend(commit.bytes, at: appendPoint, syncFirst: false)
        try applyCommit(commit, at: commitOffset)
        if let vault { try vault.counters.record(vm: vm, container: containerID, generation: generation) }
        return generation
    }
}
