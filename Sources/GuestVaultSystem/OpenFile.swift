#if canImport(Glibc)
import Glibc
#endif

/// An open file descriptor, closed when the value is released. Reads and writes are
/// positional (pread/pwrite) and complete or throw.
public final class OpenFile: @unchecked Sendable {
    public let path: String
    let fd: Int32

    public enum Mode: Sendable { case readOnly, readWrite }

    /// Opens an existing file.
    public init(path: String, mode: Mode) throws {
        self.path = path
        fd = try Syscalls.open(path, mode == .readOnly ? O_RDONLY : O_RDWR, 0)
    }

    /// Creates a new file (fails if anything, a symlink included, is at `path`) with
    /// `permissions`, whatever the umask.
    public init(creating path: String, permissions: UInt32 = FileSystem.privateFileMode) throws {
        self.path = path
        fd = try Syscalls.open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, permissions)
        _ = fchmod(fd, permissions)
    }

    /// Takes ownership of an open descriptor.
    init(adopting fd: Int32, path: String) {
        self.path = path
        self.fd = fd
    }

    deinit { Syscalls.close(fd) }

    /// The file's current size.
    public func size() throws -> Int64 {
        Int64(try Syscalls.fstat(fd, path: path).st_size)
    }

    /// Reads up to `count` bytes at `offset` (fewer only at end of file).
    public func read(at offset: Int64, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withUnsafeMutableBytes { try Syscalls.preadAll(fd, $0, at: offset, path: path) }
        if n < count { bytes.removeSubrange(n...) }
        return bytes
    }

    /// The offset of the first non-zero byte in `count` bytes from `offset` (or up to the
    /// end of the file, if that comes first), or nil if they are all zero. Reads in 1 MiB
    /// pieces and compares eight bytes at a time: for checking that preallocated space
    /// is untouched, which every open of a container does.
    public func firstNonZeroByte(at offset: Int64, count: Int64) throws -> Int64? {
        // Not zero-filled first: every byte looked at is one read(2) wrote.
        let capacity = Int(min(count, 1 << 20))
        var buffer = [UInt8](unsafeUninitializedCapacity: capacity) { _, initialized in initialized = capacity }
        var cursor = offset
        while cursor < offset + count {
            let want = Int(min(Int64(buffer.count), offset + count - cursor))
            let n = try read(into: &buffer, at: cursor, count: want)
            if n == 0 { return nil }
            let found: Int? = buffer.withUnsafeBytes { raw in
                // 32 bytes a step while all are zero (a preallocated tail is mostly zeroes).
                var i = 0
                while i + 32 <= n {
                    let a = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
                    let b = raw.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self)
                    let c = raw.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self)
                    let d = raw.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self)
                    if (a | b | c | d) != 0 { break }
                    i += 32
                }
                while i < n {
                    if raw[i] != 0 { return i }
                    i += 1
                }
                return nil
            }
            if let found { return cursor + Int64(found) }
            cursor += Int64(n)
        }
        return nil
    }

    /// Reads into `buffer` at `offset`, returning how many bytes were read.
    public func read(into buffer: inout [UInt8], at offset: Int64) throws -> Int {
        try buffer.withUnsafeMutableBytes { try Syscalls.preadAll(fd, $0, at: offset, path: path) }
    }

    /// Reads up to `count` bytes at `offset` into the start of `buffer` (which must hold
    /// them), returning how many were read.
    public func read(into buffer: inout [UInt8], at offset: Int64, count: Int) throws -> Int {
        precondition(count <= buffer.count)
        return try buffer.withUnsafeMutableBytes {
            try Syscalls.preadAll(fd, UnsafeMutableRawBufferPointer(rebasing: $0[0..<count]), at: offset, path: path)
        }
    }

    /// Reads up to `count` bytes at `offset` into `buffer` starting at `bufferOffset`.
    public func read(into buffer: inout [UInt8], bufferOffset: Int, at offset: Int64, count: Int) throws -> Int {
        precondition(bufferOffset >= 0 && bufferOffset + count <= buffer.count)
        return try buffer.withUnsafeMutableBytes {
            try Syscalls.preadAll(fd, UnsafeMutableRawBufferPointer(rebasing: $0[bufferOffset..<(bufferOffset + count)]), at: offset, path: path)
        }
    }

    /// Writes all of `bytes` at `offset`.
    public func write(_ bytes: [UInt8], at offset: Int64) throws {
        try bytes.withUnsafeBytes { try Syscalls.pwriteAll(fd, $0, at: offset, path: path) }
    }

    /// Writes a slice at `offset`.
    public func write(_ bytes: ArraySlice<UInt8>, at offset: Int64) throws {
        try bytes.withUnsafeBytes { try Syscalls.pwriteAll(fd, $0, at: offset, path: path) }
    }

    /// Appends all of `bytes` to a file opened with O_APPEND (``SafeOpen/appendLog(_:mode:)``):
    /// on Linux, pwrite on such a file writes at the end whatever the offset (pwrite(2)).
    public func append(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try Syscalls.pwriteAll(fd, $0, at: 0, path: path) }
    }

    /// Makes written data durable (data and the size, not other metadata).
    public func syncData() throws { try Syscalls.fdatasync(fd, path: path) }

    /// Asks the kernel to start writing `count` bytes from `offset` to the disk now,
    /// without waiting, so that a later ``syncData()`` has less left to do. Not a
    /// durability guarantee.
    public func startWriteback(at offset: Int64, count: Int64) { Syscalls.startWriteback(fd, offset: offset, count: count) }

    /// Makes data and all metadata durable.
    public func sync() throws { try Syscalls.fsync(fd, path: path) }

    /// Sets the file's length.
    public func truncate(to length: Int64) throws { try Syscalls.ftruncate(fd, length, path: path) }

    /// Takes a whole-file lock held as long as this descriptor is open. Returns false if
    /// another open file (in this or another process) holds a conflicting lock.
    public func tryLock(exclusive: Bool = true) throws -> Bool {
        try Syscalls.tryLock(fd, exclusive: exclusive, path: path)
    }

    /// What ``tryLock(_:start:length:)`` does to a byte range.
    public enum LockChange: Sendable { case shared, exclusive, unlock }

    /// Locks (or unlocks) bytes `start ..< start + length` of the file (length 0: to the
    /// end, however far it grows), held as long as this descriptor is open; a change on a
    /// range this descriptor already locks replaces that part atomically. Returns false
    /// if another open file (in this or another process) holds a conflicting lock.
    public func tryLock(_ change: LockChange, start: Int64, length: Int64) throws -> Bool {
        let type = switch change {
        case .shared: F_RDLCK
        case .exclusive: F_WRLCK
        case .unlock: F_UNLCK
        }
        return try Syscalls.tryLock(fd, type: Int32(type), start: start, length: length, path: path)
    }

    /// The raw descriptor, for passing to another process or a system API.
    public var descriptor: Int32 { fd }
}
