import Synchronization

/// Named instants on the durability path, where the crash tests stop a writer on purpose
/// (`guestvault-crash-tool --kill-at POINT --kill-after N`; docs/RELIABILITY.md).
///
/// The library only announces each instant with ``reached(_:)``. Nothing listens unless
/// a test program installs a hook with ``setHook(_:)``; unset, an announcement is one
/// atomic load (a plain load on x86-64 and arm64).
package enum CrashPoint: String, CaseIterable, Sendable {
    /// A commit's one pwrite (entry records and commit record) has returned; its
    /// fdatasync has not started.
    case afterRecordWrite = "after-record-write"
    /// The commit's fdatasync has returned (the commit is durable); the vault's rollback
    /// counter is not written yet.
    case afterRecordSync = "after-record-sync"
    /// A rollback counter record is written (pwrite), not yet fdatasynced.
    case afterCounterWrite = "after-counter-write"
    /// A rollback counter's fdatasync has returned (after a commit, on the counters'
    /// background queue).
    case afterCounterSync = "after-counter-sync"
    /// Compaction or DEK rotation: the new file is written and fsynced, not yet renamed
    /// over the container.
    case afterRewriteSync = "after-rewrite-sync"
    /// Compaction or DEK rotation: the new file is renamed over the container; the
    /// directory is not fsynced yet.
    case afterRewriteRename = "after-rewrite-rename"
}

extension CrashPoint {
    private static let armed = Atomic<Bool>(false)
    private static let hook = Mutex<(@Sendable (CrashPoint) -> Void)?>(nil)

    /// Installs (or, with nil, removes) the function called at every point. For test
    /// programs only; it runs on whatever thread reaches the point.
    package static func setHook(_ newHook: (@Sendable (CrashPoint) -> Void)?) {
        hook.withLock { $0 = newHook }
        armed.store(newHook != nil, ordering: .releasing)
    }

    /// Announces that the writer is at `point`.
    @inline(__always)
    package static func reached(_ point: CrashPoint) {
        guard armed.load(ordering: .acquiring) else { return }
        hook.withLock { $0 }?(point)
    }
}
