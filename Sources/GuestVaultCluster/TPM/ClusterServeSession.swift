import Foundation
public import GuestVaultKeys
public import GuestVaultCore
import GuestVaultCrypto
import GuestVaultState
import GuestVaultSystem
import Synchronization

/// Everything `guestvault serve` does differently on a cluster member, in one place:
/// take the VM's lease (waiting for a dead owner's lease to end when asked), copy the
/// visible generation into this owner's own file, open it with this vault (its own slot
/// or its member recipient slot), add a recipient slot for every member that lacks one,
/// make that generation visible under this owner's fencing token, and hand the server a
/// storage whose every commit is conditioned on still owning the VM.
public final class ClusterServeSession: Sendable {
    public let configuration: ClusterConfiguration
    public let ownership: VMOwnership
    public let storage: ClusterTPMStorage
    /// This owner's container file.
    public let path: String

    /// `onLost` runs (on the keep-alive thread) when the lease could not be renewed: the
    /// storage is already stopped then; the caller stops the TPM server.
    public init(sharedPath: String, vault: KeyVault, vaultPath: String, configuration: ClusterConfiguration,
                wait: Duration?, onLost: @escaping @Sendable (ClusterError) -> Void) throws {
        self.configuration = configuration
        let client = try configuration.makeClient()
        let keys = try configuration.keys
        // The VM's id comes from the shared file (readable without keys).
        let vm = try GuestStateContainer.open(at: sharedPath).vm
        let storageBox = StorageBox()
        let ownership = try VMOwnership.acquire(
            client: client, keys: keys, vm: vm.uuidString.lowercased(), member: configuration.member,
            ttl: configuration.leaseTTL, wait: wait,
            onLost: { reason in
                storageBox.storage?.failStop(reason)
                onLost(reason)
            })
        do {
            let path = try ClusterTakeover.prepare(sharedPath: sharedPath, ownership: ownership)
            let container = try GuestStateContainer.open(at: path, access: .readWrite)
            // The cluster's counter is this VM's rollback counter: the copy was checked
            // against it; the local vault may have seen generations that never became
            // visible, so its own counter does not refuse here.
            _ = try container.unlock(with: UnlockCredentials(vault: vault, recipientKeys: [try vault.recipientKey()]), allowRollback: true)
            let members = try ClusterMembership(client: client, keys: keys).members()
            try Self.addMemberSlots(container, members: members, vm: vm)
            let storage = ClusterTPMStorage(container: container, fileName: (path as NSString).lastPathComponent, ownership: ownership)
            storageBox.set(storage)
            try storage.publishCurrentGeneration()
            self.path = path
            self.storage = storage
            self.ownership = ownership
        } catch {
            ownership.release()
            throw error
        }
    }

    /// Gives the VM up (revokes the lease) so another member can take it at once.
    public func release() { ownership.release() }

    /// Adds a recipient slot for each member whose key no slot holds (at most the
    /// container's slot limit; a VM fails over among the members that have a slot).
    static func addMemberSlots(_ container: GuestStateContainer, members: [ClusterMember], vm: UUID) throws {
        var present = Set(container.slots.slots.compactMap { slot -> String? in
            if case .recipient(let recipient, _, _) = slot { return hexString(recipient) }
            return nil
        })
        for member in members where !present.contains(member.recipient.lowercased()) {
            guard container.slots.slots.count < KeyProtectorSet.maximumCount else { break }
            guard let bytes = bytes(fromHex: member.recipient), bytes.count == 32 else {
                throw ClusterError(.clusterProtocol, "member '\(member.name)' has a recipient key that is not 64 hex digits")
            }
            let key = try X25519.PublicKey(rawRepresentation: bytes)
            try container.addSlot { dek in try .wrapForRecipient(dek, recipient: key, vm: vm) }
            present.insert(member.recipient.lowercased())
        }
    }
}

/// The storage, once it exists, for the lease-loss callback that may run before.
private final class StorageBox: Sendable {
    private let value = Mutex<ClusterTPMStorage?>(nil)
    var storage: ClusterTPMStorage? { value.withLock { $0 } }
    func set(_ storage: ClusterTPMStorage) { value.withLock { $0 = storage } }
}
