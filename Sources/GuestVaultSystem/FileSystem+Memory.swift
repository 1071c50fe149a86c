#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials

/// What trusted launch needs of a plaintext file that exists only while a VM runs
/// (docs/TRUSTED-LAUNCH.md): that it lives in memory, and who owns it.
extension FileSystem {
    /// tmpfs(5) and ramfs: files that never reach a disk.
    static let memoryFileSystems: Set<String> = ["tmpfs", "ramfs"]

    /// Whether `path` (a directory or file) is on tmpfs or ramfs.
    public static func isMemoryBacked(_ path: String) throws -> Bool {
        memoryFileSystems.contains(try Syscalls.fileSystemType(path))
    }
}

/// The owner, permission bits, size and modification time of an open file.
public struct FileStatus: Sendable, Equatable {
    public let owner: UInt32
    public let mode: UInt32
    public let size: Int64
    /// Nanoseconds since the epoch.
    public let modified: Int64
}

extension OpenFile {
    /// fstat(2) of the open file.
    public func status() throws -> FileStatus {
        let info = try Syscalls.fstat(fd, path: path)
        return FileStatus(owner: info.st_uid, mode: info.st_mode & 0o7777, size: Int64(info.st_size),
                          modified: Int64(info.st_mtim.tv_sec) &* 1_000_000_000 &+ Int64(info.st_mtim.tv_nsec))
    }
}

extension Syscalls {
    /// The file system type (as /proc/self/mountinfo names it) of the mount holding
    /// `path`: the mount point that is the longest prefix of its real path.
    static func fileSystemType(_ path: String) throws -> String {
        guard let resolved = realpath(path, nil) else { throw SystemError("realpath", path: path, errno: errno) }
        let real = String(cString: resolved)
        free(resolved)
        // procfs reports size 0, so this is read to its end rather than by its size.
        guard let table = FileManager.default.contents(atPath: "/proc/self/mountinfo") else {
            throw SystemError("read", path: "/proc/self/mountinfo", errno: EIO)
        }
        var best: (point: String, type: String)?
        for line in String(decoding: table, as: UTF8.self).split(separator: "\n") {
            // id parent major:minor root mount-point options [optional…] - type source super-options
            let fields = line.split(separator: " ")
            guard fields.count > 6, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { continue }
            let point = String(fields[4]).replacing("\\040", with: " ")
            let inside = point == "/" || real == point || real.hasPrefix(point + "/")
            if inside && point.count >= (best?.point.count ?? -1) { best = (point, String(fields[dash + 1])) }
        }
        guard let best else { throw SystemError("find the mount of", path: path, errno: ENOENT) }
        return best.type
    }
}
