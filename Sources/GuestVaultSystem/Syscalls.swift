#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// Every raw system call GuestVault makes goes through this file, so there is one place
/// to audit: retries on EINTR, short reads and writes, and errno.
enum Syscalls {
    /// F_OFD_SETLK and F_OFD_GETLK (Linux 3.15+); Glibc exposes them only with _GNU_SOURCE.
    static let fOFDSetLock: Int32 = 37
    static let fOFDGetLock: Int32 = 36

    static func retrying(_ body: () -> Int32) -> Int32 {
        while true {
            let result = body()
            if result == -1 && errno == EINTR { continue }
            return result
        }
    }

    /// Opens through swift-system's FileDescriptor (EINTR retried), always close-on-exec.
    static func open(_ path: String, _ flags: Int32, _ mode: mode_t) throws -> Int32 {
        let access = FileDescriptor.AccessMode(rawValue: flags & O_ACCMODE)
        let options = FileDescriptor.OpenOptions(rawValue: (flags & ~O_ACCMODE) | O_CLOEXEC)
        do {
            let descriptor = try FileDescriptor.open(
                FilePath(path), access, options: options,
                permissions: (flags & O_CREAT) != 0 ? FilePermissions(rawValue: CModeT(mode)) : nil,
                retryOnInterrupt: true)
            return descriptor.rawValue
        } catch let error as Errno {
            throw SystemError(error.rawValue == ELOOP ? "open (a symlink is not followed here)" : "open",
                              path: path, errno: error.rawValue)
        }
    }

    /// Makes `to` a new name of `from`; fails with EEXIST if anything is at `to`.
    static func link(_ from: String, _ to: String) throws {
        if Glibc.link(from, to) != 0 { throw SystemError("link to \(to)", path: from, errno: errno) }
    }

    /// Clears O_NONBLOCK (set while opening to avoid blocking on a FIFO).
    static func clearNonBlocking(_ fd: Int32, path: String) throws {
        let flags = fcntl(fd, F_GETFL)
        if flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0 {
            throw SystemError("fcntl", path: path, errno: errno)
        }
    }

    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    static func pwriteAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("write", path: path, errno: errno)
            }
            done += n
        }
    }

    static func preadAll(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = Glibc.pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("read", path: path, errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    static func fsync(_ fd: Int32, path: String) throws {
        if retrying({ Glibc.fsync(fd) }) != 0 { throw SystemError("fsync", path: path, errno: errno) }
    }

    static func fdatasync(_ fd: Int32, path: String) throws {
        if retrying({ Glibc.fdatasync(fd) }) != 0 { throw SystemError("fdatasync", path: path, errno: errno) }
    }

    /// Starts writeback of a byte range without waiting for it: on Linux,
    /// POSIX_FADV_DONTNEED starts writing dirty pages of the range and drops the clean
    /// ones (sync_file_range is not in Swift's Glibc module). Durability still needs
    /// fdatasync; this only lets the disk start earlier. A failure is ignored: a hint.
    static func startWriteback(_ fd: Int32, offset: Int64, count: Int64) {
        _ = posix_fadvise(fd, off_t(offset), off_t(count), POSIX_FADV_DONTNEED)
    }

    static func fstat(_ fd: Int32, path: String) throws -> Glibc.stat {
        var info = Glibc.stat()
        if Glibc.fstat(fd, &info) != 0 { throw SystemError("stat", path: path, errno: errno) }
        return info
    }

    static func statPath(_ path: String) throws -> Glibc.stat {
        var info = Glibc.stat()
        if fstatat(AT_FDCWD, path, &info, 0) != 0 { throw SystemError("stat", path: path, errno: errno) }
        return info
    }

    static func lstatPath(_ path: String) throws -> Glibc.stat {
        var info = Glibc.stat()
        if fstatat(AT_FDCWD, path, &info, AT_SYMLINK_NOFOLLOW) != 0 { throw SystemError("stat", path: path, errno: errno) }
        return info
    }

    static func statFileSystem(_ path: String) throws -> Glibc.statvfs {
        // statvfs(3) shares its name with the struct in Swift; fstatvfs does not.
        let fd = try open(path, O_RDONLY, 0)
        defer { close(fd) }
        var info = Glibc.statvfs()
        if fstatvfs(fd, &info) != 0 { throw SystemError("statvfs", path: path, errno: errno) }
        return info
    }

    static func rename(_ from: String, _ to: String) throws {
        if Glibc.rename(from, to) != 0 { throw SystemError("rename to \(to)", path: from, errno: errno) }
    }

    static func unlink(_ path: String) throws {
        if Glibc.unlink(path) != 0 { throw SystemError("remove", path: path, errno: errno) }
    }

    static func mkdir(_ path: String, _ mode: mode_t) throws {
        if Glibc.mkdir(path, mode) != 0 { throw SystemError("create directory", path: path, errno: errno) }
    }

    static func chmod(_ path: String, _ mode: mode_t) throws {
        if Glibc.chmod(path, mode) != 0 { throw SystemError("chmod", path: path, errno: errno) }
    }

    static func ftruncate(_ fd: Int32, _ length: Int64, path: String) throws {
        if retrying({ Glibc.ftruncate(fd, off_t(length)) }) != 0 { throw SystemError("truncate", path: path, errno: errno) }
    }

    /// An open file description lock (F_OFD_SETLK): whole file, write or read.
    /// Returns false if another process or open file holds a conflicting lock.
    static func tryLock(_ fd: Int32, exclusive: Bool, path: String) throws -> Bool {
        try tryLock(fd, type: exclusive ? F_WRLCK : F_RDLCK, start: 0, length: 0, path: path)
    }

    /// An open file description lock (F_OFD_SETLK) of `type` (F_RDLCK, F_WRLCK or
    /// F_UNLCK) on bytes `start ..< start + length` (length 0: to the end, however far the
    /// file grows). Returns false if another open file holds a conflicting lock.
    static func tryLock(_ fd: Int32, type: Int32, start: Int64, length: Int64, path: String) throws -> Bool {
        var lock = flock()
        lock.l_type = Int16(type)
        lock.l_whence = Int16(SEEK_SET)
        lock.l_start = off_t(start)
        lock.l_len = off_t(length)
        lock.l_pid = 0
        let result = retrying { fcntl(fd, fOFDSetLock, &lock) }
        if result == 0 { return true }
        if errno == EAGAIN || errno == EACCES { return false }
        throw SystemError("lock", path: path, errno: errno)
    }

    /// The pid holding a conflicting lock, if the kernel tells (F_OFD_GETLK reports -1
    /// for OFD locks; classic locks report the pid).
    static func lockHolder(_ fd: Int32) -> Int32? {
        var lock = flock()
        lock.l_type = Int16(F_WRLCK)
        lock.l_whence = Int16(SEEK_SET)
        if fcntl(fd, F_GETLK, &lock) == 0, lock.l_type != Int16(F_UNLCK), lock.l_pid > 0 {
            return lock.l_pid
        }
        return nil
    }

    static var currentUID: uid_t { getuid() }
    static var currentEUID: uid_t { geteuid() }
    static var currentPID: Int32 { getpid() }
}
