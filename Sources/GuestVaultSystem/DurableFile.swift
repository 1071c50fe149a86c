#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// The one way GuestVault writes a file durably: stage a new file beside the target
/// (created with O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC and the private mode, so a
/// symlink, FIFO or file another user placed there is never written through), write it,
/// fdatasync it, publish it by rename (replace) or link (never replace), fsync the
/// directory, and remove the staged file on any failure. After a crash at any instant
/// the target holds either its old content or all of the new content.
///
/// No other code in GuestVault opens a file for writing, except through
/// ``SafeOpen`` (existing regular files, lock files), which applies the same checks.
public final class StagedFile {
    /// The file being written (a temporary name beside ``target``).
    public let file: OpenFile
    /// Where ``publish(_:)`` puts it.
    public let target: String
    private var published = false

    /// How the staged file is made visible under its target name.
    public enum Publish: Sendable {
        /// Replace whatever regular file is at the target (rename). A symlink or a
        /// non-regular file at the target is refused, never replaced silently.
        case replacing
        /// Fail with `alreadyExists` if anything is at the target (link, then unlink).
        case creatingNew
    }

    /// Stages a new file beside `target` with `mode` (0600 by default).
    public init(beside target: String, mode: UInt32 = FileSystem.privateFileMode) throws {
        self.target = target
        let name = "\(target).tmp-\(Syscalls.currentPID)-\(UInt32.random(in: 0...UInt32.max))"
        file = try OpenFile(creating: name, permissions: mode)
    }

    deinit {
        if !published { try? Syscalls.unlink(file.path) }
    }

    /// Writes all of `bytes` at `offset` of the staged file.
    public func write(_ bytes: [UInt8], at offset: Int64) throws { try file.write(bytes, at: offset) }

    /// Makes the staged file durable and visible as ``target``; then syncs the directory.
    /// On failure the staged file is removed and the target is as it was.
    public func publish(_ how: Publish = .replacing) throws {
        do {
            try file.syncData()
            switch how {
            case .replacing:
                if let info = try? Syscalls.lstatPath(target), info.st_mode & S_IFMT != S_IFREG {
                    throw SystemError("replace (not a regular file; refusing to replace it)",
                                      path: target, errno: info.st_mode & S_IFMT == S_IFLNK ? ELOOP : EEXIST)
                }
                try Syscalls.rename(file.path, target)
            case .creatingNew:
                try Syscalls.link(file.path, target)
                try Syscalls.unlink(file.path)
            }
        } catch {
            try? Syscalls.unlink(file.path)
            published = true
            throw error
        }
        published = true
        try FileSystem.syncDirectory(FileSystem.parentDirectory(of: target))
    }
}

/// Durable whole-file writes on top of ``StagedFile``.
public enum DurableFile {
    /// Writes `bytes` to `path` atomically and durably, replacing a regular file there.
    public static func write(_ bytes: [UInt8], to path: String, mode: UInt32 = FileSystem.privateFileMode,
                             _ how: StagedFile.Publish = .replacing) throws {
        let staged = try StagedFile(beside: path, mode: mode)
        try staged.write(bytes, at: 0)
        try staged.publish(how)
    }
}

/// Opening files that exist or may exist, with the checks every path in GuestVault
/// gets: never through a symlink (O_NOFOLLOW), never blocking on a FIFO (O_NONBLOCK,
/// then a regular-file check), close-on-exec.
public enum SafeOpen {
    /// Opens an existing regular file. A symlink, FIFO, device or directory is refused
    /// with an error naming the path.
    public static func existing(_ path: String, mode: OpenFile.Mode) throws -> OpenFile {
        let flags = (mode == .readOnly ? O_RDONLY : O_RDWR) | O_NOFOLLOW | O_NONBLOCK
        let fd = try Syscalls.open(path, flags, 0)
        let file = OpenFile(adopting: fd, path: path)
        try requireRegular(file)
        try Syscalls.clearNonBlocking(fd, path: path)
        return file
    }

    /// Opens or creates a lock file (O_CREAT without O_EXCL, O_NOFOLLOW): it must be a
    /// regular file owned by this user or root, not writable by group or others.
    public static func lockFile(_ path: String, mode: UInt32 = FileSystem.privateFileMode) throws -> OpenFile {
        let fd = try Syscalls.open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK, mode_t(mode))
        let file = OpenFile(adopting: fd, path: path)
        try requireRegular(file)
        let info = try Syscalls.fstat(fd, path: path)
        guard info.st_uid == Syscalls.currentEUID || info.st_uid == 0 else {
            throw SystemError("lock (owned by uid \(info.st_uid), not by this user)", path: path, errno: EPERM)
        }
        guard info.st_mode & 0o022 == 0 else {
            throw SystemError("lock (writable by group or others, mode \(String(info.st_mode & 0o777, radix: 8)))", path: path, errno: EPERM)
        }
        try Syscalls.clearNonBlocking(fd, path: path)
        return file
    }

    /// Opens or creates a log file for appending (O_APPEND|O_CREAT|O_NOFOLLOW, 0600 when
    /// created): it must be a regular file owned by this user or root, not writable by
    /// group or others. Write to it with ``OpenFile/append(_:)``.
    public static func appendLog(_ path: String, mode: UInt32 = FileSystem.privateFileMode) throws -> OpenFile {
        let fd = try Syscalls.open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK, mode_t(mode))
        let file = OpenFile(adopting: fd, path: path)
        try requireRegular(file)
        let info = try Syscalls.fstat(fd, path: path)
        guard info.st_uid == Syscalls.currentEUID || info.st_uid == 0 else {
            throw SystemError("open log (owned by uid \(info.st_uid), not by this user)", path: path, errno: EPERM)
        }
        guard info.st_mode & 0o022 == 0 else {
            throw SystemError("open log (writable by group or others, mode \(String(info.st_mode & 0o777, radix: 8)))", path: path, errno: EPERM)
        }
        try Syscalls.clearNonBlocking(fd, path: path)
        return file
    }

    private static func requireRegular(_ file: OpenFile) throws {
        let info = try Syscalls.fstat(file.fd, path: file.path)
        let kind = info.st_mode & S_IFMT
        guard kind == S_IFREG else {
            let what = kind == S_IFDIR ? "a directory" : kind == S_IFIFO ? "a FIFO" : kind == S_IFCHR || kind == S_IFBLK ? "a device" : kind == S_IFSOCK ? "a socket" : "not a regular file"
            throw SystemError("open (\(what), expected a regular file)", path: file.path, errno: kind == S_IFDIR ? EISDIR : EINVAL)
        }
    }
}
