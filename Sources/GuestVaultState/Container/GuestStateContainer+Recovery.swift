import GuestVaultCore
import GuestVaultCrypto
public import GuestVaultKeys

extension GuestStateContainer {
    /// Re-wraps the DEK for `newVault` (KEK epoch `epoch`) in a container unlocked by any
    /// slot (typically a recovery key after the old vault was lost) and commits: the new
    /// vault's slot replaces every vault slot of other vaults (whose root keys are gone
    /// or are not wanted any more); recipient and passphrase slots stay. The sealed
    /// entries are not touched. From now on the container records its generations in
    /// `newVault`'s rollback counters; a generation older than `newVault` has already
    /// seen of this container is refused unless `allowRollback`. Returns the new
    /// generation.
    @discardableResult
    public func adoptVault(_ newVault: KeyVault, epoch: UInt32 = 1, keepOtherVaultSlots: Bool = false, allowRollback: Bool = false) throws -> UInt64 {
        let keys = try unlockedKeys()
        guard access == .readWrite else { throw ContainerError(.readOnly, subject: path, reason: "opened read-only; open it for writing to re-wrap its key") }
        if case .rollback(let latest) = try newVault.counters.check(vm: vm, container: containerID, generation: generation), !allowRollback {
            throw ContainerError(.rollback, subject: path,
                                 reason: "generation \(generation) is older than generation \(latest), which vault \(newVault.path) has seen of this container: an older copy; pass --allow-rollback to take it anyway")
        }
        var slots: [KeyProtector] = [try .wrapForVault(keys.dek, vault: newVault, vm: vm, epoch: epoch)]
        for slot in scan.manifest.slots.slots {
            if case .vault(let id, _, _) = slot {
                if id == newVault.rootKeyID || !keepOtherVaultSlots { continue }
            }
            slots.append(slot)
        }
        let set = try KeyProtectorSet(slots)
        vault = newVault
        if case .rollback(let latest) = try newVault.counters.check(vm: vm, container: containerID, generation: generation) {
            try advanceGeneration(past: latest)
        }
        return try commitSlots(set)
    }

    /// Rewrites the container (the same records, a new first commit) at generation
    /// `latest + 1`, so that an older copy taken back on purpose (an authorized rollback:
    /// a restore with --allow-rollback) is newer than anything the vault has seen and
    /// its counter moves forward, never back. Needs the container unlocked for writing.
    public func advanceGeneration(past latest: UInt64) throws {
        let keys = try unlockedKeys()
        guard access == .readWrite else { throw ContainerError(.readOnly, subject: path, reason: "opened read-only") }
        guard pending.isEmpty else { throw ContainerError(.readOnly, subject: path, reason: "commit or discard staged changes first") }
        guard latest >= generation else { return }
        let target: UInt64
        do {
            target = try Checked.next(latest, "the generation after \(latest)")
        } catch {
            throw ContainerError(.limit, subject: path, reason: "the vault has seen the last generation of this container; make a new container", underlying: error)
        }
        try rewrite(slots: scan.manifest.slots, newKeys: nil, oldKeys: keys, generation: target)
    }
}
