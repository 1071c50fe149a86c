import GuestVaultSystem

/// What a migration source keeps after handing the container's writer lock over
/// (``GuestStateContainer/handOffWriterLock()``): a shared lock on the hand-off range of
/// the lock file, so that no ordinary writer takes the container while the destination
/// has not yet. Released with this value, or when the process ends.
public final class ContainerHandOff: Sendable {
    let lock: ContainerLock
    init(_ lock: ContainerLock) { self.lock = lock }
}

extension GuestStateContainer {
    /// Opens an existing container for writing as a migration writer (swtpm's
    /// `--migration incoming` destination, or a source taking its container back after a
    /// failed migration): it takes the writer's byte of the lock file only, so a source's
    /// ``ContainerHandOff`` does not refuse it, while every other writer does.
    public static func openForMigration(at path: String) throws -> GuestStateContainer {
        try open(at: path, access: .readWrite, lockScope: .migration)
    }

    /// Gives the writer lock up to a migration destination on shared storage (swtpm's
    /// `--migration release-lock-outgoing`) and returns what keeps ordinary writers out
    /// until the destination holds it. Staged changes must be committed first. This
    /// instance must not write after it (commits would run without the writer lock):
    /// open the container again read-only.
    public func handOffWriterLock() throws -> ContainerHandOff {
        guard access == .readWrite, let lock else {
            throw ContainerError(.readOnly, subject: path, reason: "opened read-only; there is no writer lock to hand over")
        }
        guard pending.isEmpty else {
            throw ContainerError(.readOnly, subject: path, reason: "commit or discard staged changes before handing the writer lock over")
        }
        try flush()
        try lock.handOff()
        return ContainerHandOff(lock)
    }
}
