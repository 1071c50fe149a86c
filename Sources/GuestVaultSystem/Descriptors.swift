#if canImport(Glibc)
import Glibc
#endif

/// Reading and writing a descriptor someone handed us (a pipe with a secret, standard
/// error), without Foundation's FileHandle: the per-VM executable links no more of
/// Foundation than FoundationEssentials (docs/PERFORMANCE.md).
public enum Descriptors {
    /// Reads `fd` to its end, at most `limit + 1` bytes (so that a caller sees when there
    /// was more than `limit`). The read buffer is zeroed after use (the bytes may be a
    /// secret); the descriptor stays open.
    public static func readToEnd(_ fd: Int32, limit: Int) throws -> [UInt8] {
        // Room for all of it at once: growing would leave copies of a secret in freed memory.
        var bytes: [UInt8] = []
        bytes.reserveCapacity(limit + 1)
        var buffer = [UInt8](repeating: 0, count: 4096)
        defer { for index in buffer.indices { buffer[index] = 0 } }
        while bytes.count <= limit {
            let want = min(buffer.count, limit + 1 - bytes.count)
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, want) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw SystemError("read", path: "descriptor \(fd)", errno: errno) }
            if count == 0 { break }
            bytes += buffer[0..<count]
        }
        return bytes
    }

    /// Writes all of `text` to `fd` (standard error: 2), retrying partial writes; a
    /// failure is ignored (there is nowhere left to report it).
    public static func write(_ text: String, to fd: Int32) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return }
            offset += written
        }
    }
}
