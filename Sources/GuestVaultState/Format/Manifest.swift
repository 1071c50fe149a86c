import GuestVaultKeys
import Foundation

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
        let slotBytes = slots.encoded()
        w.u16(UInt16(slotBytes.count))
        w.raw(slotBytes)
        w.u16(UInt16(entries.count))
        for entry in entries {
            let name = Array(entry.name.utf8)
            w.u8(UInt8(name.count))
            w.raw(name)
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
        let generation = try r.u64("generation")
        let timestamp = try r.u64("timestamp")
        let previous = try r.u64("previous commit offset")
        let flags = try r.u32("commit flags")
        guard flags == 0 else { throw r.error("commit flags", "unknown flags \(flags)") }
        guard generation >= 1 else { throw r.error("generation", "zero") }
        guard previous <= UInt64(Int64.max) else { throw r.error("previous commit offset", "out of range") }
        let slotCount = Int(try r.u16("slots length"))
        let slotBytes = try r.array(slotCount, "key protector slots")
        let slots: KeyProtectorSet
        do {
            slots = try KeyProtectorSet.parse(slotBytes)
        } catch let error as VaultError {
            throw r.error("key protector slots", error.description)
        }
        let count = Int(try r.u16("entry count"))
        guard count <= ContainerFormat.maximumEntries else { throw r.error("entry count", "\(count) is more than \(ContainerFormat.maximumEntries)") }
        var entries: [EntryRecord] = []
        var names = Set<String>()
        for index in 0..<count {
            let nameLength = Int(try r.u8("entry \(index) name length"))
            let nameBytes = try r.array(nameLength, "entry \(index) name")
            guard let name = String(validating: nameBytes, as: UTF8.self), EntryName.isValid(name) else {
                throw r.error("entry \(index) name", "not a valid entry name")
            }
            guard names.insert(name).inserted else { throw r.error("entry \(index) name", "\"\(name)\" appears twice") }
            guard let kind = EntryRecord.Kind(rawValue: try r.u8("entry \(index) kind")) else { throw r.error("entry \(index) kind", "unknown") }
            guard try r.u8("entry \(index) reserved") == 0 else { throw r.error("entry \(index) reserved", "not zero") }
            let sealed = try r.u64("entry \(index) sealed generation")
            guard sealed >= 1, sealed <= generation else { throw r.error("entry \(index) sealed generation", "\(sealed) is outside 1...\(generation)") }
            let size = try r.u64("entry \(index) size")
            if kind == .blob, size > UInt64(ContainerFormat.maximumBlobSize) { throw r.error("entry \(index) size", "blob of \(size) bytes is too large") }
            let offset = try r.u64("entry \(index) record offset")
            guard offset >= UInt64(ContainerFormat.logStart), offset <= UInt64(Int64.max) else { throw r.error("entry \(index) record offset", "out of range") }
            let salt = try r.array(16, "entry \(index) salt")
            let digest = try r.array(16, "entry \(index) digest")
            entries.append(EntryRecord(name: name, kind: kind, sealedGeneration: sealed, size: size,
                                       recordOffset: Int64(offset), salt: salt, digest: digest))
        }
        let auth = try r.array(authCount, "commit authenticator")
        try r.expectEnd("commit record")
        return Manifest(generation: generation, timestamp: timestamp, previousCommit: Int64(previous), slots: slots,
                        entries: entries, auth: auth)
    }
}

/// Entry names: 1 to 255 bytes of UTF-8, no control characters, no "/" at the start.
public enum EntryName {
    /// The names GuestVault itself uses.
    public static let tpmPermanent = "tpm.permanent"
    public static let tpmVolatile = "tpm.volatile"
    public static let tpmSaveState = "tpm.savestate"
    public static let tpmPPI = "tpm.ppi"
    public static let uefiNVRAM = "uefi.nvram"
    public static let vmID = "vm.id"
    public static let vmRuntime = "vm.runtime"

    public static func isValid(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...255).contains(bytes.count) else { return false }
        return name.unicodeScalars.allSatisfy { !$0.properties.isWhitespace || $0 == " " } &&
            !name.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f } &&
            name.trimmingCharacters(in: .whitespaces) == name
    }
}
