import Foundation
import GuestVaultCrypto

/// The first 64 bytes of a container file; written once when the container is made.
/// The log of records starts at ``ContainerFormat/logStart``. See docs/FORMAT.md §2.
struct Superblock: Equatable {
    static let magic = Array("GVSTATE\u{0}".utf8)
    static let count = 64

    var containerID: [UInt8]   // 16
    var vm: UUID
    var created: UInt64

    func encoded() throws -> [UInt8] {
        var w = ByteWriter(capacity: Self.count)
        w.raw(Self.magic)
        w.u16(ContainerFormat.version)
        w.u16(UInt16(Self.count))
        w.u32(0)
        w.raw(containerID)
        w.raw(uuidBytes(vm))
        w.u64(created)
        w.raw(Array(try SHA256.hash(w.bytes).prefix(8)))
        return w.bytes
    }

    static func parse(_ bytes: [UInt8], path: String) throws -> Superblock {
        guard bytes.count >= count else {
            throw ContainerError(.truncated, subject: path, reason: "the file is \(bytes.count) bytes, shorter than the \(count)-byte header")
        }
        guard Array(bytes[0..<8]) == magic else {
            throw ContainerError(.notAContainer, subject: path, reason: "not a GuestVault container (bad magic at byte 0)")
        }
        var r = ByteReader(bytes, from: 8, to: count, subject: path)
        let version = try r.u16("format version")
        guard version == ContainerFormat.version else {
            throw ContainerError(.notAContainer, subject: path, reason: "container format version \(version) is not supported (this build reads \(ContainerFormat.version))")
        }
        let length = try r.u16("header length")
        let flags = try r.u32("header flags")
        guard length == count, flags == 0 else { throw r.error("header", "length \(length) or flags \(flags) not supported") }
        let id = try r.array(16, "container id")
        let vm = try r.array(16, "VM UUID")
        let created = try r.u64("created")
        let check = try r.array(8, "header checksum")
        guard Array(try SHA256.hash(Array(bytes[0..<56])).prefix(8)) == check else {
            throw ContainerError(.malformed, subject: path, reason: "header checksum does not match (bytes 0..<64 were changed)")
        }
        return Superblock(containerID: id, vm: uuid(from: vm), created: created)
    }
}

/// Constants of the container format.
public enum ContainerFormat {
    public static let version: UInt16 = 1
    /// Where the record log starts (the header is padded to this offset).
    public static let logStart: Int64 = 4096
    /// The largest blob entry (bigger ones are streams).
    public static let maximumBlobSize = 64 << 20
    /// Entries per container.
    public static let maximumEntries = 1024
    /// Stream chunk size.
    public static let chunkSize = 256 << 10
    /// Bytes of a commit record body a reader accepts.
    public static let maximumCommitSize = 1 << 20
}

func uuidBytes(_ id: UUID) -> [UInt8] { withUnsafeBytes(of: id.uuid) { Array($0) } }

func uuid(from b: [UInt8]) -> UUID {
    UUID(uuid: (b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]))
}
