public import GuestVaultCrypto

/// What the server needs from the TPM's container for live migration: the key that
/// seals state blobs on the control channel, the generations that decide what is a
/// rollback, one commit for an incoming blob set, and the container's writer lock for
/// the shared-storage hand-off. The container glue (GuestVaultTPMContainer) implements
/// it; the TPM module sees no container and no DEK, only the derived migration root key.
public protocol TPMMigrationHost: AnyObject, Sendable {
    /// The VM's UUID and the container's id, 16 bytes each.
    var migrationVM: [UInt8] { get }
    var migrationContainerID: [UInt8] { get }
    /// ``SealedMigrationBlob/rootKey(dek:containerID:)`` of the container.
    func migrationRootKey() throws -> SecretBytes
    /// The container's generation now (re-read from the file while the lock is not held).
    func currentGeneration() throws -> UInt64
    /// What a blob set must be newer than: the generation the permanent state was last
    /// sealed at, and the generation of the last blob set accepted into this container.
    func migrationFloor() throws -> TPMMigrationFloor
    /// Stores the blobs of an incoming set (and deletes `deleting`), records the set as
    /// the last accepted one, in one commit.
    func commitMigratedState(_ blobs: [TPMStateBlob: [UInt8]], deleting: Set<TPMStateBlob>,
                             acceptedSet: SealedMigrationBlob.Binding?) throws
    /// Whether this process holds the container's writer lock.
    var holdsWriterLock: Bool { get }
    /// Gives the writer lock up (the migration destination takes it).
    func releaseWriterLock() throws
    /// Takes the writer lock, trying `retries` more times 10 ms apart (LOCK_STORAGE).
    func acquireWriterLock(retries: UInt32) throws
}

/// The generations below which a blob set is a rollback (docs/MIGRATION-BLOB.md).
public struct TPMMigrationFloor: Sendable, Hashable {
    /// The generation at which the container's permanent state was last written: a set
    /// started before it holds an older TPM.
    public var permanentSealedAt: UInt64
    /// The generation of the last set accepted into the container, if any: a set must be
    /// newer.
    public var lastAcceptedSet: UInt64?

    public init(permanentSealedAt: UInt64, lastAcceptedSet: UInt64?) {
        self.permanentSealedAt = permanentSealedAt
        self.lastAcceptedSet = lastAcceptedSet
    }

    /// Why a set of `generation` is refused, or nil if it is new enough.
    public func refusal(of generation: UInt64) -> String? {
        if generation < permanentSealedAt {
            return "it was made at container generation \(generation), but the container's permanent TPM state was written at generation \(permanentSealedAt): this is an older blob set replayed"
        }
        if let last = lastAcceptedSet, generation <= last {
            return "it was made at container generation \(generation), and a blob set of generation \(last) was already accepted into this container: this is an older blob set replayed"
        }
        return nil
    }
}
