import Dispatch
import FoundationEssentials
public import GuestVaultCore
import GuestVaultCrypto
import GuestVaultState
import GuestVaultSystem
import Synchronization

extension ErrorCode {
    /// The plaintext VARS file may not be placed there (not tmpfs, or someone else's file).
    public static let uefiVarsUnsafePath = ErrorCode("uefiVarsUnsafePath", .permission)
    /// The container has no `uefi.vars` entry (made with `create --uefi`).
    public static let uefiVarsMissing = ErrorCode("uefiVarsMissing", .notFound)
    /// The VARS file changed size or type under QEMU.
    public static let uefiVarsChanged = ErrorCode("uefiVarsChanged", .integrity)
}

/// An error of the VM's plaintext UEFI variable store file.
public enum UEFIVarsErrorDomain {}
public typealias UEFIVarsError = DomainError<UEFIVarsErrorDomain>

/// The VM's UEFI variable store while it runs (docs/TRUSTED-LAUNCH.md): QEMU needs a
/// plaintext pflash file, so it exists only on tmpfs (0600), made from the container's
/// `uefi.vars` entry when serving starts, sealed back into the container whenever it
/// changes (``sealIfChanged()``, called every poll interval) and at the end, then removed.
///
/// The window in which a guest's change can be lost to a crash of the host is the poll
/// interval plus one commit (the file itself is on tmpfs and goes with the host).
public final class UEFIVarsFile: Sendable {
    public static let entryName = "uefi.vars"
    /// The largest VARS file taken (OVMF's 4 MiB build has a 528 KiB store).
    public static let maximumSize = 16 << 20

    public let path: String
    private let storage: ContainerTPMStorage
    /// Who may own the file: this user, and under libvirt its QEMU user (the file is the
    /// one libvirt made, owned by the user QEMU runs as).
    public let allowedOwners: Set<UInt32>
    private struct Progress {
        var sealedDigest: [UInt8]
        var size: Int
        var seals = 0
        var lastSealMicroseconds: Double = 0
        var removed = false
    }
    private let progress: Mutex<Progress>

    /// What happened at ``init(path:storage:)`` to a file already at `path`.
    public enum Leftover: Sendable, Equatable {
        /// Nothing was there.
        case none
        /// A file of ours from a run that was killed: it differed from the container and
        /// was sealed in before the new run (the guest's last changes are kept).
        case recovered
        /// A file of ours that matched the container.
        case unchanged
        /// libvirt: the container's variables were written over the copy of the
        /// `<nvram template>` libvirt made (the container's store wins).
        case replacedTemplateCopy
        /// libvirt, first start of the VM with UEFI: the container had no store, so
        /// libvirt's copy of the template was checked and sealed in as the VM's variables.
        case sealedTemplateCopy
    }
    public let leftover: Leftover

    /// Materializes the container's `uefi.vars` at `path`, which must be on tmpfs or ramfs.
    /// A file already at `path` is taken only if it is a regular file of this user, mode
    /// 0600 or stricter, and the size of the entry (a run killed before it could clean up,
    /// perhaps with QEMU still running on it): its content is sealed in and the file is
    /// kept. Anything else there (a symlink, another user's
    /// file, a FIFO) is refused and left alone.
    public init(path: String, storage: ContainerTPMStorage) throws {
        self.path = path
        self.storage = storage
        allowedOwners = [FileSystem.currentUser]
        let directory = FileSystem.parentDirectory(of: path)
        let inMemory: Bool
        do { inMemory = try FileSystem.isMemoryBacked(directory) } catch {
            throw UEFIVarsError(.uefiVarsUnsafePath, "cannot check the file system of \(directory)", underlying: error)
        }
        guard inMemory else {
            throw UEFIVarsError(.uefiVarsUnsafePath, "\(directory) is not on tmpfs; the plaintext UEFI variables may only live in memory (use a directory under /run or /dev/shm)")
        }
        guard let sealed = try storage.readEntry(Self.entryName) else {
            throw UEFIVarsError(.uefiVarsMissing, "\(storage.info.path) holds no \(Self.entryName) entry; make one with `guestvault create --uefi` or `guestvault put STATE uefi.vars FILE`")
        }
        guard sealed.count <= Self.maximumSize else {
            throw UEFIVarsError(.uefiVarsChanged, "\(Self.entryName) is \(sealed.count) bytes; at most \(Self.maximumSize)")
        }
        var current = sealed
        var leftover = Leftover.none
        if FileSystem.exists(path) || Self.isSymlink(path) {
            // Kept in place: a QEMU that still runs keeps writing to this very file.
            let found = try Self.readOurs(path, expectedSize: sealed.count, owners: [FileSystem.currentUser])
            if found != sealed {
                try storage.commitEntry(Self.entryName, found)
                current = found
                leftover = .recovered
            } else {
                leftover = .unchanged
            }
        } else {
            let staged = try StagedFile(beside: path)
            try staged.write(current, at: 0)
            try staged.publish(.creatingNew)
        }
        self.leftover = leftover
        progress = Mutex(Progress(sealedDigest: try SHA256.hash(current), size: current.count))
    }

    /// libvirt (docs/LIBVIRT.md, "UEFI variables"): takes over the pflash file libvirt
    /// made at `path` from the domain's `<nvram template>` before it started swtpm, and
    /// writes the container's `uefi.vars` into it (the same file, so the owner and labels
    /// libvirt gave it stay). On the VM's first start the container has no store yet:
    /// libvirt's copy is checked with `validate` and sealed in as the VM's variables.
    ///
    /// The file is taken only if its directory is on tmpfs or ramfs, is a real directory
    /// (no symlink on the way) of root or this user that no one else may write to, and
    /// the file is a regular file (opened with O_NOFOLLOW|O_NONBLOCK) owned by one of
    /// `allowedOwners`, with no access for group or others, the size of the sealed
    /// store. Anything else (a symlink, FIFO, another user's file) is refused and left
    /// alone; nothing is written to it and it is not removed.
    public init(adopting path: String, storage: ContainerTPMStorage, allowedOwners: Set<UInt32>,
                validate: ([UInt8]) throws -> Void) throws {
        self.path = path
        self.storage = storage
        let owners = allowedOwners.union([FileSystem.currentUser])
        self.allowedOwners = owners
        try Self.requireSafeDirectory(FileSystem.parentDirectory(of: path))
        let file: OpenFile
        do { file = try SafeOpen.existing(path, mode: .readWrite) } catch {
            throw UEFIVarsError(.uefiVarsUnsafePath, "\(path) is not a regular file this process may take (a symlink, FIFO or device is refused and left alone)", underlying: error)
        }
        let status = try file.status()
        guard owners.contains(status.owner), status.mode & 0o077 == 0 else {
            throw UEFIVarsError(.uefiVarsUnsafePath, "\(path) belongs to uid \(status.owner) with mode \(octal(status.mode)); it must belong to this user or QEMU's (uids \(owners.sorted().map(String.init).joined(separator: ", "))) with mode 0600; left alone")
        }
        guard status.size > 0, status.size <= Int64(Self.maximumSize) else {
            throw UEFIVarsError(.uefiVarsChanged, "\(path) is \(status.size) bytes; a VARS file has 1 to \(Self.maximumSize); left alone")
        }
        let copy = try file.read(at: 0, count: Int(status.size))
        guard copy.count == Int(status.size) else {
            throw UEFIVarsError(.uefiVarsChanged, "\(path) shrank to \(copy.count) bytes while being read")
        }
        let current: [UInt8]
        if let sealed = try storage.readEntry(Self.entryName) {
            guard sealed.count == copy.count else {
                throw UEFIVarsError(.uefiVarsChanged, "the VM's sealed UEFI variables are \(sealed.count) bytes, the copy of the template libvirt made at \(path) \(copy.count): the domain's firmware is not the one the variables were made for; left alone")
            }
            if sealed != copy {
                try file.write(sealed, at: 0)
                leftover = .replacedTemplateCopy
            } else {
                leftover = .unchanged
            }
            current = sealed
        } else {
            do { try validate(copy) } catch {
                throw UEFIVarsError(.uefiVarsChanged, "\(path), libvirt's copy of the domain's <nvram template>, is not a UEFI variable store; not sealed", underlying: error)
            }
            try storage.commitEntry(Self.entryName, copy)
            leftover = .sealedTemplateCopy
            current = copy
        }
        progress = Mutex(Progress(sealedDigest: try SHA256.hash(current), size: current.count))
    }

    /// The directory of a plaintext VARS file: on tmpfs or ramfs, a real directory (no
    /// symlink anywhere in the path), owned by root or this user, writable by no one else.
    static func requireSafeDirectory(_ directory: String) throws {
        let status: (isDirectory: Bool, mode: UInt32, owner: UInt32)
        do { status = try FileSystem.linkStatus(directory) } catch {
            throw UEFIVarsError(.uefiVarsUnsafePath, "cannot examine \(directory), the directory of the plaintext UEFI variables", underlying: error)
        }
        let (owner, mode) = (status.owner, status.mode)
        guard status.isDirectory,
              URL(fileURLWithPath: directory).resolvingSymlinksInPath().path == directory else {
            throw UEFIVarsError(.uefiVarsUnsafePath, "\(directory) is not a directory, or a symlink is on its path; left alone")
        }
        guard owner == 0 || owner == FileSystem.currentUser, mode & 0o022 == 0 else {
            throw UEFIVarsError(.uefiVarsUnsafePath, "\(directory) belongs to uid \(owner) with mode \(octal(mode)); the directory of the plaintext UEFI variables must be root's (or this user's) and writable by no one else (0700, or 0711 for QEMU's user)")
        }
        let inMemory: Bool
        do { inMemory = try FileSystem.isMemoryBacked(directory) } catch {
            throw UEFIVarsError(.uefiVarsUnsafePath, "cannot check the file system of \(directory)", underlying: error)
        }
        guard inMemory else {
            throw UEFIVarsError(.uefiVarsUnsafePath, "\(directory) is not on tmpfs; the plaintext UEFI variables may only live in memory")
        }
    }

    private static func isSymlink(_ path: String) -> Bool {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) != nil
    }

    /// Reads the file at `path` if it is ours: a regular file (not followed through a
    /// symlink) of one of `owners`, no access for group or others, `expectedSize` bytes.
    static func readOurs(_ path: String, expectedSize: Int, owners: Set<UInt32>) throws -> [UInt8] {
        let file: OpenFile
        do { file = try SafeOpen.existing(path, mode: .readOnly) } catch {
            throw UEFIVarsError(.uefiVarsUnsafePath, "\(path) is not a regular file this process may take (a symlink, FIFO or device is refused and left alone)", underlying: error)
        }
        let status = try file.status()
        guard owners.contains(status.owner), status.mode & 0o077 == 0 else {
            throw UEFIVarsError(.uefiVarsUnsafePath, "\(path) belongs to uid \(status.owner) with mode \(octal(status.mode)); it must be this user's (uid \(FileSystem.currentUser))"
                                + (owners.count > 1 ? " or QEMU's (uids \(owners.sorted().map(String.init).joined(separator: ", ")))" : "") + " and mode 0600; left alone")
        }
        guard status.size == Int64(expectedSize) else {
            throw UEFIVarsError(.uefiVarsChanged, "\(path) is \(status.size) bytes, the sealed store \(expectedSize); a pflash file never changes size, so it was not sealed")
        }
        let bytes = try file.read(at: 0, count: expectedSize)
        guard bytes.count == expectedSize else {
            throw UEFIVarsError(.uefiVarsChanged, "\(path) shrank to \(bytes.count) bytes while being read")
        }
        return bytes
    }

    /// Seals the file into the container if its content differs from the last sealed
    /// one. Returns whether it sealed.
    @discardableResult
    public func sealIfChanged() throws -> Bool {
        let size = progress.withLock { $0.size }
        let bytes = try Self.readOurs(path, expectedSize: size, owners: allowedOwners)
        let digest = try SHA256.hash(bytes)
        guard digest != progress.withLock({ $0.sealedDigest }) else { return false }
        let started = DispatchTime.now().uptimeNanoseconds
        try storage.commitEntry(Self.entryName, bytes)
        let micros = Double(DispatchTime.now().uptimeNanoseconds - started) / 1_000
        progress.withLock {
            $0.sealedDigest = digest
            $0.seals += 1
            $0.lastSealMicroseconds = micros
        }
        return true
    }

    /// Seal-backs so far, and how long the last commit took (µs).
    public var statistics: (seals: Int, lastSealMicroseconds: Double) {
        progress.withLock { ($0.seals, $0.lastSealMicroseconds) }
    }

    /// Seals a last time and removes the plaintext. The file is removed even if the last
    /// seal failed (the error is thrown after), so no plaintext stays behind.
    public func finish() throws {
        guard !progress.withLock({ $0.removed }) else { return }
        defer {
            try? FileSystem.removeFile(path)
            progress.withLock { $0.removed = true }
        }
        try sealIfChanged()
    }
}

extension ContainerTPMStorage {
    /// An entry of the container the TPM is in, or nil.
    public func readEntry(_ name: String) throws -> [UInt8]? {
        try container.withLock { c in c.entryNames.contains(name) ? try c.read(name) : nil }
    }

    /// Writes and commits one entry beside the TPM's (under the same lock as its NV
    /// commits); a failure leaves the container at its last commit.
    public func commitEntry(_ name: String, _ bytes: [UInt8]) throws {
        try container.withLock { c in
            do {
                try c.write(name, bytes)
                try c.commit()
            } catch {
                c.discardPendingChanges()
                throw error
            }
        }
    }
}

/// A mode as four octal digits (`0600`), as `ls` and chmod write it.
func octal(_ mode: UInt32) -> String {
    let digits = String(mode & 0o7777, radix: 8)
    return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
}
