import GuestVaultCore
import GuestVaultKeys

/// One entry as a commit names it.
public struct EntryRecord: Sendable, Equatable {
    public enum Kind: UInt8, Sendable { case blob = 1, stream = 2 }

    public var name: String
    public var kind: Kind
    /// The generation the entry was sealed at (bound into its associated data).
    public var sealedGeneration: UInt64
    /// Plaintext size in bytes.
    public var size: UInt64
    /// Offset of the entry's record header in the file.
    var recordOffset: Int64
    var salt: [UInt8]
    /// Blob: the GCM tag. Stream: first 16 bytes of SHA-256 of all chunk tags in order.
    var digest: [UInt8]
}

/// The body of a commit record: the container's metadata at one generation, readable
/// without keys, authenticated with HMAC-SHA256 under the manifest key once unlocked.
/// See docs/FORMAT.md §3.3.
struct Manifest: Equatable {
    static let authCount = 32

    var generation: UInt64
    var timestamp: UInt64
    var previousCommit: Int64
    var slots: KeyProtectorSet
    /// Sorted by the names' UTF-8 bytes (``EntryName/precedes(_:_:)``).
    var entries: [EntryRecord]
    var auth: [UInt8]

    /// The body without the authenticator (what the HMAC covers, after the superblock
    /// and the record header's first 16 bytes).
    func unauthenticatedBody() -> [UInt8] {
        var w = ByteWriter(capacity: 256 + entries.count * 80)
        w.u64(generation)
        w.u64(timestamp)
        w.u64(UInt64(previousCommit))
        w.u32(0)
        w.prefixed(slots.encoded(), UInt16.self)
        w.u16(UInt16(entries.count))
        for entry in entries {
            w.prefixed(Array(entry.name.utf8), UInt8.self)
            w.u8(entry.kind.rawValue)
            w.u8(0)
            w.u64(entry.sealedGeneration)
            w.u64(entry.size)
            w.u64(UInt64(entry.recordOffset))
            w.raw(entry.salt)
            w.raw(entry.digest)
        }
        return w.bytes
    }

    func encoded() -> [UInt8] { unauthenticatedBody() + auth }

    static func parse(_ body: [UInt8], base: Int64, subject: String) throws -> Manifest {
        var r = ByteReader(body, base: base, subject: subject)
        do {
            return try parse(&r)
        } catch let error as ByteCodecError {
            throw ContainerError.parsing(error, "the commit record at byte \(base - Int64(RecordHeader.count))")
        }
    }

    private static func parse(_ r: inout ByteReader) throws -> Manifest {
        let generation = try r.u64("generation")
        let timestamp = try r.u64("timestamp")
        let previous = try r.u64("previous commit offset")
        let flags = try r.u32("commit flags")
        guard flags == 0 else { throw r.malformed("commit flags", "unknown flags \(flags)") }
        guard generation >= 1 else { throw r.malformed("generation", "zero") }
        guard let previousOffset = Int64(exactly: previous) else { throw r.malformed("previous commit offset", "\(previous) is out of range") }
        let slotBytes = try r.prefixed(UInt16.self, "key protector slots")
        let slots: KeyProtectorSet
        do {
            slots = try KeyProtectorSet.parse(slotBytes)
        } catch {
            throw ContainerError(.malformed, subject: "\(r.subject) at byte \(r.position)", reason: "the key protector slots cannot be read",
                                 underlying: error)
        }
        let count = Int(try r.u16("entry count"))
        guard count <= ContainerFormat.maximumEntries else { throw r.malformed("entry count", "\(count) is more than \(ContainerFormat.maximumEntries)") }
        var entries: [EntryRecord] = []
        entries.reserveCapacity(count)
        for index in 0..<count {
            let nameBytes = try r.prefixed(UInt8.self, "entry \(index) name")
            guard let name = EntryName.decode(nameBytes) else {
                throw r.malformed("entry \(index) name", "not a valid entry name (docs/FORMAT.md §3.4)")
            }
            if let previous = entries.last, !EntryName.precedes(previous.name, name) {
                throw r.malformed("entry \(index) name", "\"\(name)\" does not follow \"\(previous.name)\" (names are unique, in byte order)")
            }
            guard let kind = EntryRecord.Kind(rawValue: try r.u8("entry \(index) kind")) else { throw r.malformed("entry \(index) kind", "unknown") }
            guard try r.u8("entry \(index) reserved") == 0 else { throw r.malformed("entry \(index) reserved", "not zero") }
            let sealed = try r.u64("entry \(index) sealed generation")
            guard sealed >= 1, sealed <= generation else { throw r.malformed("entry \(index) sealed generation", "\(sealed) is outside 1...\(generation)") }
            let size = try r.u64("entry \(index) size")
            if kind == .blob, size > UInt64(ContainerFormat.maximumBlobSize) { throw r.malformed("entry \(index) size", "blob of \(size) bytes is too large") }
            if kind == .stream, size > ContainerFormat.maximumStreamLength { throw r.malformed("entry \(index) size", "stream of \(size) bytes is too large") }
            let offset = try r.u64("entry \(index) record offset")
            guard let recordOffset = Int64(exactly: offset), recordOffset >= ContainerFormat.logStart else {
                throw r.malformed("entry \(index) record offset", "\(offset) is out of range")
            }
            let salt = try r.array(16, "entry \(index) salt")
            let digest = try r.array(16, "entry \(index) digest")
            entries.append(EntryRecord(name: name, kind: kind, sealedGeneration: sealed, size: size,
                                       recordOffset: recordOffset, salt: salt, digest: digest))
        }
        let auth = try r.array(authCount, "commit authenticator")
        try r.expectEnd("commit record")
        return Manifest(generation: generation, timestamp: timestamp, previousCommit: previousOffset, slots: slots,
                        entries: entries, auth: auth)
    }
}
