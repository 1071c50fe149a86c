import GuestVaultCore
import GuestVaultCrypto

/// The fixed header at the start of a stream record's body (48 bytes), docs/FORMAT.md §3.2:
/// salt (16) | chunk size (u32) | zero (u32) | plaintext length (u64) | chunk count (u64)
/// | first 8 bytes of SHA-256 of the previous 40 bytes.
struct StreamHeader: Equatable {
    static let count = 48
    var salt: [UInt8]
    var chunkSize: UInt32
    var length: UInt64
    var chunkCount: UInt64

    func encoded() throws -> [UInt8] {
        var w = ByteWriter(capacity: Self.count)
        w.raw(salt)
        w.u32(chunkSize)
        w.u32(0)
        w.u64(length)
        w.u64(chunkCount)
        w.raw(Array(try SHA256.hash(w.bytes).prefix(8)))
        return w.bytes
    }

    /// Parses and checks a header: after it, every sum and product of its numbers the
    /// reader makes (chunk offsets, the sealed length) fits in an Int64.
    static func parse(_ bytes: [UInt8], base: Int64 = 0, subject: String) throws -> StreamHeader {
        var r = ByteReader(bytes, base: base, subject: subject)
        do {
            let salt = try r.array(16, "stream salt")
            let chunkSize = try r.u32("chunk size")
            _ = try r.u32("reserved")
            let length = try r.u64("stream length")
            let count = try r.u64("chunk count")
            let check = try r.array(8, "stream header check")
            guard Array(try SHA256.hash(Array(bytes[0..<40])).prefix(8)) == check else { throw r.malformed("stream header", "check does not match") }
            guard chunkSize >= 4096, chunkSize <= 64 << 20, chunkSize % 16 == 0 else { throw r.malformed("chunk size", "\(chunkSize) is out of range") }
            guard length <= ContainerFormat.maximumStreamLength else {
                throw r.malformed("stream length", "\(length) bytes is more than a stream may hold")
            }
            guard count == chunkCount(length: length, chunkSize: chunkSize) else {
                throw r.malformed("chunk count", "\(count) chunks do not fit a stream of \(length) bytes in chunks of \(chunkSize)")
            }
            return StreamHeader(salt: salt, chunkSize: chunkSize, length: length, chunkCount: count)
        } catch let error as ByteCodecError {
            throw ContainerError.parsing(error, "the stream header")
        }
    }

    /// Chunks in a stream of `length` bytes: at least one (an empty stream has one empty
    /// last chunk).
    static func chunkCount(length: UInt64, chunkSize: UInt32) -> UInt64 {
        let size = UInt64(max(chunkSize, 1))
        return length == 0 ? 1 : length / size + (length % size == 0 ? 0 : 1)
    }

    /// Bytes the stream occupies after this header (a parsed header keeps this far from
    /// overflowing: length ≤ 2^56, chunk count ≤ 2^44).
    var sealedLength: UInt64 { length + chunkCount * 16 }

    /// Where chunk `index` starts, counted from the start of this header (the stream
    /// record's offset + 32): 48 + index·(C + 16).
    func chunkOffset(index: UInt64) throws(Checked.Overflow) -> Int64 {
        let stride = UInt64(chunkSize) + 16
        let offset = try Checked.add(UInt64(Self.count), Checked.multiply(index, stride, "chunk offset"), "chunk offset")
        return try Checked.convert(offset, to: Int64.self, "chunk offset")
    }

    /// Plaintext bytes in chunk `index` (< chunk count).
    func plainCount(index: UInt64) -> Int {
        let size = UInt64(chunkSize)
        if index == chunkCount - 1 { return Int(length - index * size) }
        return Int(size)
    }
}
