public import FoundationEssentials
import GuestVaultCore
public import GuestVaultKeys

/// A VM's guest state container file: named entries sealed under the container's DEK,
/// its key protector slots, and a generation that each commit increments.
///
/// Open it without keys to inspect it (``info``); ``unlock(with:allowRollback:)`` to read
/// and write entries. Writes are staged and become visible, atomically and durably, with
/// ``commit()``. Only one process may open a container for writing (a lock file names
/// the holder). The format is in docs/FORMAT.md; the code is by concern: opening and
/// unlocking (+Open), reading (+Read), staging and committing (+Commit), slots and key
/// rotation (+Slots), rewrites and compaction (+Rewrite).
public final class GuestStateContainer {
    public enum Access: Sendable { case readOnly, readWrite }

    public let path: String
    public let access: Access
    var storage: any ContainerStorage
    let lock: ContainerLock?
    var scan: LogScan
    var keys: EntryKeys?
    var vault: KeyVault?
    /// The slot that opened the key, once unlocked.
    public internal(set) var unlockedSlot: Int?
    var pending: [String: Pending] = [:]
    var pendingOrder: [String] = []
    /// Where the next record goes (after any staged streams).
    var appendPoint: Int64

    enum Pending {
        case blob([UInt8])
        case stream(offset: Int64, header: StreamHeader, digest: [UInt8])
        case removed
    }

    /// Bytes preallocated (written as zeros) ahead of the log, so that a commit is an
    /// overwrite and its fdatasync need not update the file's size.
    static let preallocationStep: Int64 = 1 << 20
    /// Compaction starts when this many bytes of the log are no longer named by the
    /// last commit, and they are more than half the log.
    static let compactionThreshold: Int64 = 8 << 20

    init(path: String, access: Access, storage: any ContainerStorage, lock: ContainerLock?, scan: LogScan) {
        self.path = path
        self.access = access
        self.storage = storage
        self.lock = lock
        self.scan = scan
        self.appendPoint = scan.logEnd
    }

    deinit {
        try? vault?.counters.flush()
    }

    /// Waits until the vault's rollback counter for this VM is on disk too (commits
    /// record it in the background).
    public func flush() throws {
        try vault?.counters.flush()
    }

    // MARK: What can be read without keys

    /// What can be read without keys.
    public var info: ContainerInfo {
        ContainerInfo(
            path: path, vm: scan.superblock.vm, containerID: containerIDValue,
            generation: scan.manifest.generation, created: scan.superblock.created, committed: scan.manifest.timestamp,
            entries: scan.manifest.entries.map(EntryInfo.init),
            slots: scan.manifest.slots.slots.enumerated().map { SlotInfo(index: $0.offset, kind: "\($0.element.kind)", detail: $0.element.summary) },
            fileSize: scan.fileSize, logBytes: scan.logEnd - ContainerFormat.logStart, liveBytes: scan.liveBytes)
    }

    public var vm: UUID { scan.superblock.vm }
    /// The container's random 16-byte id.
    public var containerID: [UInt8] { scan.superblock.containerID }
    /// The id as a value (prints as hex).
    public var containerIDValue: ContainerID {
        // The superblock parser reads exactly 16 bytes.
        ContainerID(bytes: scan.superblock.containerID) ?? ContainerID(bytes: [UInt8](repeating: 0, count: 16))!
    }
    public var generation: UInt64 { scan.manifest.generation }
    public var slots: KeyProtectorSet { scan.manifest.slots }
    public var entryNames: [String] { scan.manifest.entries.map(\.name) }

    /// Where the last commit ends: the bytes [0, logEnd) are a complete container and
    /// never change while the file stays (appends go after them; rewrites use a new file).
    public var logEnd: Int64 { scan.logEnd }

    /// Reads raw file bytes into `buffer` at `bufferOffset`, returning how many were read.
    public func readRaw(into buffer: inout [UInt8], bufferOffset: Int, at offset: Int64, count: Int) throws -> Int {
        do {
            return try storage.read(into: &buffer, bufferOffset: bufferOffset, at: offset, count: count)
        } catch {
            throw ContainerError.io(error, subject: path, "cannot read \(count) bytes at byte \(offset)")
        }
    }

    /// Reads raw file bytes (for transfers of the sealed file).
    public func rawBytes(at offset: Int64, count: Int) throws -> [UInt8] {
        try LogScan.read(storage, offset, count)
    }

    // MARK: Shared checks

    func unlockedKeys() throws -> EntryKeys {
        guard let keys else {
            throw ContainerError(.notUnlocked, subject: path, reason: "the container is locked; unlock it with its vault, a recipient key or a passphrase")
        }
        return keys
    }

    func committedEntry(_ name: String) throws -> EntryRecord {
        guard let entry = scan.manifest.entries.first(where: { EntryName.same($0.name, name) }) else {
            throw ContainerError(.noSuchEntry, subject: "\(path) entry \(name)",
                                 reason: "no such entry (entries: \(entryNames.isEmpty ? "none" : entryNames.joined(separator: ", ")))")
        }
        return entry
    }

    func binding(_ entry: EntryRecord) -> EntryBinding {
        EntryBinding(vm: vm, containerID: scan.superblock.containerID, name: entry.name, generation: entry.sealedGeneration)
    }

    /// The generation the next commit gets; the last generation (2^64 - 1) has none.
    func nextGeneration() throws -> UInt64 {
        do {
            return try Checked.next(generation, "the generation after \(generation)")
        } catch {
            throw ContainerError(.limit, subject: path,
                                 reason: "generation \(generation) is the last one; no further commit is possible (make a new container)",
                                 underlying: error)
        }
    }
}
