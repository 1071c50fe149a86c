import GuestVaultCrypto

/// One record of the log: a 32-byte header and a body. See docs/FORMAT.md §3.
///
/// ```
/// 0   4  magic "GVLR"
/// 4   1  type (1 blob, 2 stream, 3 commit)
/// 5   3  zero
/// 8   8  body length
/// 16 16  check: first 16 bytes of SHA-256(bytes 0..<16 || checked body)
/// ```
/// The checked body is the whole body for blob and commit records, and the 48-byte
/// stream header for stream records (their chunks are authenticated by AES-GCM and by
/// the commit that names them). The check lets a reader without keys find where the
/// log ends after a crash; authenticity comes from the keys.
struct RecordHeader: Equatable {
    enum Kind: UInt8 { case blob = 1, stream = 2, commit = 3 }

    static let magic = Array("GVLR".utf8)
    static let count = 32

    var kind: Kind
    var bodyLength: UInt64
    var check: [UInt8]

    /// Bytes 0..<16 of a header: magic, type, zeros, body length.
    static func prefix(kind: Kind, bodyLength: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: 16)
        w.raw(magic)
        w.u8(kind.rawValue)
        w.raw([0, 0, 0])
        w.u64(bodyLength)
        return w.bytes
    }

    static func make(kind: Kind, bodyLength: UInt64, checkedBody: [UInt8]) throws -> RecordHeader {
        var hash = try SHA256()
        try hash.update(prefix(kind: kind, bodyLength: bodyLength))
        try hash.update(checkedBody)
        return RecordHeader(kind: kind, bodyLength: bodyLength, check: Array(try hash.finalize().prefix(16)))
    }

    func encoded() -> [UInt8] { Self.prefix(kind: kind, bodyLength: bodyLength) + check }

    /// Parses a header; nil if the bytes are not a record header (the log ends here).
    static func parse(_ bytes: [UInt8]) -> RecordHeader? {
        guard bytes.count >= count, Array(bytes[0..<4]) == magic, bytes[5] == 0, bytes[6] == 0, bytes[7] == 0,
              let kind = Kind(rawValue: bytes[4]) else { return nil }
        let length = bytes[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return RecordHeader(kind: kind, bodyLength: length, check: Array(bytes[16..<32]))
    }

    /// Whether `checkedBody` matches the check.
    func verifies(checkedBody: [UInt8]) throws -> Bool {
        try Self.make(kind: kind, bodyLength: bodyLength, checkedBody: checkedBody).check == check
    }
}

/// The fixed header at the start of a stream record's body (48 bytes):
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

    static func parse(_ bytes: [UInt8], subject: String) throws -> StreamHeader {
        var r = ByteReader(bytes, subject: subject)
        let salt = try r.array(16, "stream salt")
        let chunkSize = try r.u32("chunk size")
        _ = try r.u32("reserved")
        let length = try r.u64("stream length")
        let count = try r.u64("chunk count")
        let check = try r.array(8, "stream header check")
        guard Array(try SHA256.hash(Array(bytes[0..<40])).prefix(8)) == check else { throw r.error("stream header", "check does not match") }
        guard chunkSize >= 4096, chunkSize <= 64 << 20, chunkSize % 16 == 0 else { throw r.error("chunk size", "\(chunkSize) is out of range") }
        // Hostile lengths: keep every later sum and product far from overflowing.
        guard length <= 1 << 56 else { throw r.error("stream length", "\(length) bytes is more than a stream may hold") }
        guard count == SealedStream.chunkCount(length: length, chunkSize: Int(chunkSize)) else {
            throw r.error("chunk count", "\(count) chunks do not fit a stream of \(length) bytes in chunks of \(chunkSize)")
        }
        return StreamHeader(salt: salt, chunkSize: chunkSize, length: length, chunkCount: count)
    }

    /// Bytes the stream occupies on disk after this header.
    var sealedLength: UInt64 { length + chunkCount * UInt64(AESGCM.tagByteCount) }
}
