import GuestVaultCore
public import GuestVaultState
public import GuestVaultTPM
import Synchronization

/// TPM state kept in an unlocked, writable guest state container: each store writes
/// the entry and commits (one write and one fdatasync) before returning.
public final class ContainerTPMStorage: TPMStateStorage {
    private let container: Mutex<GuestStateContainer>
    private let commitCount = Atomic<Int>(0)

    /// Durable commits made for the TPM (one per NV change).
    public var commits: Int { commitCount.load(ordering: .relaxed) }

    public init(container: sending GuestStateContainer) {
        self.container = Mutex(container)
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
    /// last committed state, and the next store starts from it.
    public func store(_ blob: TPMStateBlob, _ bytes: [UInt8]) throws {
        try container.withLock { c in
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
