#if canImport(Glibc)
import Glibc
#endif

/// Durable, permission-aware file operations.
public enum FileSystem {
    /// Mode for files that hold secrets or state.
    public static let privateFileMode: UInt32 = 0o600
    /// Mode for directories that hold them.
    public static let privateDirectoryMode: UInt32 = 0o700

    /// Writes `bytes` to `path` so that after a crash at any instant the path holds
    /// either its old content or all of the new content (``DurableFile``).
    public static func writeAtomically(_ bytes: [UInt8], to path: String, mode: UInt32 = privateFileMode) throws {
        try DurableFile.write(bytes, to: path, mode: mode)
    }

    /// Reads a whole file, refusing one larger than `limit` bytes.
    /// A FIFO, device or directory is refused (never waited on).
    public static func readFile(_ path: String, limit: Int) throws -> [UInt8] {
        let fd = try Syscalls.open(path, O_RDONLY | O_NONBLOCK, 0)
        defer { Syscalls.close(fd) }
        let info = try Syscalls.fstat(fd, path: path)
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw SystemError("read (not a regular file)", path: path, errno: info.st_mode & S_IFMT == S_IFDIR ? EISDIR : EINVAL)
        }
        guard Int(info.st_size) <= limit else {
            throw SystemError("read (file larger than \(limit) bytes)", path: path, errno: EFBIG)
        }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        let count = try bytes.withUnsafeMutableBytes { try Syscalls.preadAll(fd, $0, at: 0, path: path) }
        bytes.removeSubrange(count...)
        return bytes
    }

    /// Creates `path` as a directory with `mode` (0700 by default) if it does not exist.
    /// Returns true if it was created.
    @discardableResult
    public static func createDirectory(_ path: String, mode: UInt32 = privateDirectoryMode) throws -> Bool {
        do {
            try Syscalls.mkdir(path, mode)
            try Syscalls.chmod(path, mode)
            try syncDirectory(parentDirectory(of: path))
            return true
        } catch let error as SystemError where error.errno == EEXIST {
            return false
        }
    }

    /// fsyncs a directory, making renames and creations in it durable.
    public static func syncDirectory(_ path: String) throws {
        let fd = try Syscalls.open(path, O_RDONLY | O_DIRECTORY, 0)
        defer { Syscalls.close(fd) }
        try Syscalls.fsync(fd, path: path)
    }

    /// Whether something exists at `path` (without following a final symlink).
    public static func exists(_ path: String) -> Bool {
        (try? Syscalls.lstatPath(path)) != nil
    }

    /// Whether `path` is a directory.
    public static func isDirectory(_ path: String) -> Bool {
        guard let info = try? Syscalls.statPath(path) else { return false }
        return info.st_mode & S_IFMT == S_IFDIR
    }

    /// Bytes an unprivileged writer can still store in the file system holding `path`.
    public static func availableBytes(at path: String) throws -> UInt64 {
        let info = try Syscalls.statFileSystem(path)
        return UInt64(info.f_bavail).multipliedReportingOverflow(by: UInt64(info.f_frsize)).partialValue
    }

    /// What is at `path` itself (a final symlink not followed): whether it is a
    /// directory, its permission bits and owner.
    public static func linkStatus(_ path: String) throws -> (isDirectory: Bool, mode: UInt32, owner: UInt32) {
        let info = try Syscalls.lstatPath(path)
        return (info.st_mode & S_IFMT == S_IFDIR, info.st_mode & 0o7777, info.st_uid)
    }

    /// Permission bits and owner of `path`.
    public static func permissions(_ path: String) throws -> (mode: UInt32, owner: UInt32) {
        let info = try Syscalls.statPath(path)
        return (info.st_mode & 0o7777, info.st_uid)
    }

    /// Removes a file; a missing file is not an error.
    public static func removeFile(_ path: String) throws {
        do { try Syscalls.unlink(path) } catch let error as SystemError where error.isNotFound {}
    }

    /// The current user's id.
    public static var currentUser: UInt32 { Syscalls.currentUID }

    /// The directory part of `path` ("." for a bare name).
    public static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    /// `component` appended to `directory`.
    /// The last component of `path` (`a/b/c` -> `c`, `a/b/` -> `b`, `/` -> `/`).
    public static func lastComponent(of path: String) -> String {
        let parts = path.split(separator: "/")
        return parts.last.map(String.init) ?? (path.hasPrefix("/") ? "/" : path)
    }

    public static func join(_ directory: String, _ component: String) -> String {
        directory.hasSuffix("/") ? directory + component : directory + "/" + component
    }
}

extension FileSystem {
    /// Sets the permission bits of `path`.
    public static func setMode(_ path: String, _ mode: UInt32) throws {
        try Syscalls.chmod(path, mode_t(mode))
    }
}

extension FileSystem {
    /// Makes `to` a new name of the file at `from`, failing (EEXIST) if `to` exists:
    /// a rename that never replaces.
    public static func link(_ from: String, to: String) throws {
        try Syscalls.link(from, to)
    }
}
