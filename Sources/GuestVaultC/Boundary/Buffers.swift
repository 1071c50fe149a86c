import Glibc
import GuestVaultCore

/// Buffers handed to C: malloc'ed with a 16-byte prefix that records their size, so
/// `gv_buffer_free(p)` can zero the whole buffer before freeing it without the caller
/// passing the length back. The pointer C sees is just after the prefix (16-byte
/// aligned, as malloc's are).
enum CBuffer {
    static let prefix = 16

    /// A new buffer of `count` usable bytes (at least one byte is allocated); the caller
    /// fills all of it.
    static func allocate(_ count: Int) throws -> UnsafeMutableRawPointer {
        guard count >= 0, count <= Int.max - prefix - 1 else {
            throw CAPIError(.capiLimit, "a buffer of \(count) bytes is too large")
        }
        guard let base = malloc(prefix + max(count, 1)) else {
            throw CAPIError(.capiAllocation, "could not allocate \(count) bytes")
        }
        base.storeBytes(of: UInt64(count), as: UInt64.self)
        return base + prefix
    }

    /// A copy of `bytes` for C.
    static func copy(_ bytes: [UInt8]) throws -> (UnsafeMutablePointer<UInt8>, Int) {
        let memory = try allocate(bytes.count)
        bytes.withUnsafeBytes { source in
            if let base = source.baseAddress { memory.copyMemory(from: base, byteCount: source.count) }
        }
        return (memory.bindMemory(to: UInt8.self, capacity: max(bytes.count, 1)), bytes.count)
    }

    /// A NUL-terminated copy of `string` for C.
    static func string(_ string: String) throws -> (UnsafeMutablePointer<CChar>, Int) {
        let utf8 = Array(string.utf8)
        let memory = try allocate(utf8.count + 1)
        let typed = memory.bindMemory(to: CChar.self, capacity: utf8.count + 1)
        for (i, byte) in utf8.enumerated() { typed[i] = CChar(bitPattern: byte) }
        typed[utf8.count] = 0
        return (typed, utf8.count)
    }

    /// Zeroes and frees a buffer made here.
    static func free(_ pointer: UnsafeMutableRawPointer) {
        let base = pointer - prefix
        let count = Int(base.load(as: UInt64.self))
        explicit_bzero(base, prefix + max(count, 1))
        Glibc.free(base)
    }
}
