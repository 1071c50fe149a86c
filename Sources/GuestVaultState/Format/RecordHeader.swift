import GuestVaultCore
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
        var r = ByteReader(bytes, subject: "record header")
        guard let magic = try? r.take(4, "magic"), magic.elementsEqual(Self.magic),
              let type = try? r.u8("type"), let kind = Kind(rawValue: type),
              let zeros = try? r.take(3, "zero"), zeros.allSatisfy({ $0 == 0 }),
              let length = try? r.u64("body length"),
              let check = try? r.array(16, "check") else { return nil }
        return RecordHeader(kind: kind, bodyLength: length, check: check)
    }

    /// Whether `checkedBody` matches the check.
    func verifies(checkedBody: [UInt8]) throws -> Bool {
        try Self.make(kind: kind, bodyLength: bodyLength, checkedBody: checkedBody).check == check
    }
}
