import FoundationEssentials
import Glibc
import GuestVaultCore
public import GuestVaultCrypto
public import GuestVaultKeys
public import GuestVaultState
public import GuestVaultTPM
import Synchronization

/// TPM state kept in an unlocked guest state container: each store writes the entry and
/// commits (one write and one fdatasync) before returning.
///
/// It is also the server's ``TPMMigrationHost``: it derives the container's migration
/// root key from the DEK, reports the generations that make a blob set stale, commits an
/// incoming blob set in one commit, and hands the container's writer lock over for
/// shared storage (the container is reopened read-only, or read-write, from its path).
public final class ContainerTPMStorage: TPMStateStorage, TPMMigrationHost {
    let container: Mutex<GuestStateContainer> // internal: UEFIVarsFile.swift and HostChannel.swift seal entries beside the TPM
    private let commitCount = Atomic<Int>(0)
    private let path: String
    private let dek: SecretBytes?
    private let vault: KeyVault?
    private let rootKey: SecretBytes?
    /// Kept after a hand-off (release-lock-outgoing) until the process ends: no ordinary
    /// writer takes the container before the destination does.
    private let handOff = Mutex<ContainerHandOff?>(nil)
    public let migrationVM: [UInt8]
    public let migrationContainerID: [UInt8]

    /// The entry that records the last blob set accepted (generation u64, set id 16 bytes).
    public static let migrationEntry = "tpm.migration"

    /// Durable commits made for the TPM (one per NV change).
    public var commits: Int { commitCount.load(ordering: .relaxed) }

    /// `container` must be unlocked. `vault` keeps the rollback counter when the
    /// container is reopened after a writer-lock hand-off.
    public init(container: sending GuestStateContainer, vault: KeyVault? = nil) {
        path = container.path
        let dek = try? container.protectionKey()
        self.dek = dek
        self.vault = vault
        migrationVM = KeyLabels.uuidBytes(container.vm)
        migrationContainerID = container.containerID
        rootKey = dek.flatMap { try? SealedMigrationBlob.rootKey(dek: $0, containerID: container.containerID) }
        self.container = Mutex(container)
    }

    public func migrationRootKey() throws -> SecretBytes {
        guard let rootKey else {
            throw TPMEngineError(.storage, "\(path) was not unlocked when the TPM's storage was made; there is no migration key")
        }
        return rootKey
    }

    /// The container's metadata now.
    public var info: ContainerInfo { container.withLock { $0.info } }

    /// Waits until the vault's rollback counter has caught up with the last commit.
    public func flush() throws { try container.withLock { try $0.flush() } }

    public func load(_ blob: TPMStateBlob) throws -> [UInt8]? {
        try container.withLock { c in
            c.entryNames.contains(blob.entryName) ? try c.read(blob.entryName) : nil
        }
    }

    /// A failed commit (a full disk) leaves nothing staged: the container still holds the
    /// last committed state, and the next store starts from it. Without the writer lock
    /// (after a hand-off) the store takes it first, or fails.
    public func store(_ blob: TPMStateBlob, _ bytes: [UInt8]) throws {
        try container.withLock { c in
            try takeLockIfNeeded(&c)
            try Self.committing(blob, "storing", in: c) {
                try c.write(blob.entryName, bytes)
                try c.commit()
            }
        }
        commitCount.add(1, ordering: .relaxed)
    }

    public func delete(_ blob: TPMStateBlob) throws {
        try container.withLock { c in
            guard c.entryNames.contains(blob.entryName) else { return }
            try takeLockIfNeeded(&c)
            try Self.committing(blob, "deleting", in: c) {
                try c.remove(blob.entryName)
                try c.commit()
            }
        }
        commitCount.add(1, ordering: .relaxed)
    }

    private static func committing(_ blob: TPMStateBlob, _ what: String, in container: GuestStateContainer,
                                   _ body: () throws -> Void) throws {
        do {
            try body()
        } catch {
            container.discardPendingChanges()
            throw TPMEngineError(.storage, "\(what) the TPM's \(blob) state in \(container.path) failed; the container keeps its last commit",
                                 underlying: error)
        }
    }

    // MARK: TPMMigrationHost

    public func currentGeneration() throws -> UInt64 {
        try container.withLock { c in
            if c.access == .readOnly { c = try reopen(.readOnly) }
            return c.generation
        }
    }

    public func migrationFloor() throws -> TPMMigrationFloor {
        try container.withLock { c in
            if c.access == .readOnly { c = try reopen(.readOnly) }
            let permanent = c.info.entries.first { $0.name == EntryName.tpmPermanent }?.sealedGeneration ?? 0
            var last: UInt64?
            if c.entryNames.contains(Self.migrationEntry) {
                let record = try c.read(Self.migrationEntry)
                guard record.count == 24, let generation = UInt64(bigEndianBytes: record.prefix(8)) else {
                    throw TPMEngineError(.malformed, "\(path) entry \(Self.migrationEntry) is \(record.count) bytes, not 24")
                }
                last = generation
            }
            return TPMMigrationFloor(permanentSealedAt: permanent, lastAcceptedSet: last)
        }
    }

    public func commitMigratedState(_ blobs: [TPMStateBlob: [UInt8]], deleting: Set<TPMStateBlob>,
                                    acceptedSet: SealedMigrationBlob.Binding?) throws {
        try container.withLock { c in
            try takeLockIfNeeded(&c)
            try Self.committing(.permanent, "storing the migrated", in: c) {
                for blob in TPMStateBlob.allCases {
                    if let bytes = blobs[blob] {
                        try c.write(blob.entryName, bytes)
                    } else if deleting.contains(blob), c.entryNames.contains(blob.entryName) {
                        try c.remove(blob.entryName)
                    }
                }
                if let set = acceptedSet {
                    try c.write(Self.migrationEntry, set.generation.bigEndianBytes + set.blobSetID)
                }
                try c.commit()
            }
        }
        commitCount.add(1, ordering: .relaxed)
    }

    public var holdsWriterLock: Bool { container.withLock { $0.access == .readWrite } }

    public func releaseWriterLock() throws {
        try container.withLock { c in
            guard c.access == .readWrite else { return }
            try c.flush()
            c = try reopen(.readOnly)
        }
    }

    public func handOffWriterLock() throws {
        try container.withLock { c in
            guard c.access == .readWrite else { return }
            let kept = try c.handOffWriterLock()
            handOff.withLock { $0 = kept }
            c = try reopen(.readOnly)
        }
    }

    public func acquireWriterLock(retries: UInt32) throws {
        try container.withLock { c in
            guard c.access == .readOnly else { return }
            var attempt: UInt32 = 0
            while true {
                do {
                    c = try reopen(.readWrite)
                    return
                } catch where ErrorChain.contains(.locked, in: error) && attempt < retries {
                    attempt += 1
                    usleep(10_000)
                }
            }
        }
    }

    private func takeLockIfNeeded(_ c: inout GuestStateContainer) throws {
        if c.access == .readOnly { c = try reopen(.readWrite) }
    }

    /// Opens the container again from its path (read-only: no lock; read-write: takes the
    /// writer's byte of the lock, as a migration writer, which a hand-off kept by the
    /// source does not refuse) and unlocks it with the DEK held since the start. The old
    /// instance, and with it a held lock, goes when it is replaced.
    private func reopen(_ access: GuestStateContainer.Access) throws -> GuestStateContainer {
        let fresh = access == .readWrite ? try GuestStateContainer.openForMigration(at: path)
                                         : try GuestStateContainer.open(at: path, access: .readOnly)
        guard fresh.containerID == migrationContainerID else {
            throw TPMEngineError(.storage, "\(path) is now another container (its id changed); refusing to use it")
        }
        guard let dek else { throw TPMEngineError(.storage, "\(path) was not unlocked; it cannot be reopened") }
        try fresh.unlock(withKey: dek, vault: access == .readWrite ? vault : nil)
        return fresh
    }
}

extension TPMStateBlob {
    /// The container entry the blob lives in.
    public var entryName: String {
        switch self {
        case .permanent: EntryName.tpmPermanent
        case .volatile: EntryName.tpmVolatile
        case .saveState: EntryName.tpmSaveState
        }
    }
}
