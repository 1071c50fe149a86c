public import GuestVaultState
public import GuestVaultTPM
import GuestVaultTPMContainer
public import GuestVaultCore
import Synchronization

/// The vTPM's storage in cluster mode: every NV change is committed to this owner's
/// container file (durable, not yet visible) and then made visible by recording its
/// generation in etcd, in a transaction conditioned on this process still owning the VM
/// (``VMOwnership/authorize(generation:file:logEnd:)``). Only then does the TPM's answer
/// go back to the guest.
///
/// Fail-stop: once a commit cannot be made visible (ownership lost, fenced, etcd without
/// quorum, its answer lost) or ``failStop(_:)`` is called (the lease could not be
/// renewed), every later load and store fails with that reason: the TPM's NV commands
/// fail, and the VM's TPM comes back only through a new `serve` that takes the VM again
/// and starts from the generation etcd recorded.
public final class ClusterTPMStorage: TPMStateStorage {
    private let container: Mutex<GuestStateContainer>
    private let ownership: VMOwnership
    /// This owner's container file's name in the shared directory.
    public let fileName: String
    private let failure = Mutex<ClusterError?>(nil)
    private let commitCount = Atomic<Int>(0)

    public init(container: sending GuestStateContainer, fileName: String, ownership: VMOwnership) {
        self.container = Mutex(container)
        self.fileName = fileName
        self.ownership = ownership
    }

    /// Visible commits made through this storage.
    public var commits: Int { commitCount.load(ordering: .relaxed) }

    /// Why the storage stopped, nil while it works.
    public var stopReason: ClusterError? { failure.withLock { $0 } }

    /// Stops the storage for good: every later load and store throws `reason`.
    public func failStop(_ reason: ClusterError) {
        failure.withLock { if $0 == nil { $0 = reason } }
    }

    public func load(_ blob: TPMStateBlob) throws -> [UInt8]? {
        try checkRunning()
        return try container.withLock { c in
            c.entryNames.contains(blob.entryName) ? try c.read(blob.entryName) : nil
        }
    }

    public func store(_ blob: TPMStateBlob, _ bytes: [UInt8]) throws {
        try commit { c in try c.write(blob.entryName, bytes) }
    }

    public func delete(_ blob: TPMStateBlob) throws {
        try commit { c in
            guard c.entryNames.contains(blob.entryName) else { return false }
            try c.remove(blob.entryName)
            return true
        }
    }

    /// Makes the container's current generation visible (after a takeover or a slot
    /// change made outside ``store(_:_:)``), if it is not already.
    public func publishCurrentGeneration() throws {
        try checkRunning()
        try container.withLock { c in
            if let recorded = ownership.recorded, recorded.generation >= c.generation { return }
            try makeVisible(c)
        }
    }

    private func commit(_ change: (inout GuestStateContainer) throws -> Void) throws {
        try commit { (c: inout GuestStateContainer) -> Bool in try change(&c); return true }
    }

    private func commit(_ change: (inout GuestStateContainer) throws -> Bool) throws {
        try checkRunning()
        try container.withLock { c in
            guard try change(&c) else { return }
            _ = try c.commit()
            try makeVisible(c)
        }
    }

    private func makeVisible(_ c: GuestStateContainer) throws {
        do {
            try ownership.authorize(generation: c.generation, file: fileName, logEnd: c.logEnd)
        } catch {
            let reason = (error as? ClusterError) ?? ClusterError(.clusterFenced, "generation \(c.generation) could not be made visible", underlying: error)
            failStop(ClusterError(reason.code, "the vTPM stopped (fail-stop): generation \(c.generation) of VM \(ownership.vm) was not made visible in the cluster",
                                  underlying: reason))
            throw reason
        }
        commitCount.add(1, ordering: .relaxed)
    }

    private func checkRunning() throws {
        if let reason = failure.withLock({ $0 }) { throw reason }
    }
}
