import FoundationEssentials
import GuestVaultCore
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

    /// Parses the first bytes of a file (at least 64 of them, or a `truncated` error).
    static func parse(_ bytes: [UInt8], subject: String) throws -> Superblock {
        guard bytes.count >= count else {
            throw ContainerError(.truncated, subject: subject, reason: "the file is \(bytes.count) bytes, shorter than the \(count)-byte header")
        }
        guard Array(bytes[0..<8]) == magic else {
            throw ContainerError(.notAContainer, subject: subject, reason: "not a GuestVault container (bad magic at byte 0)")
        }
        var r = ByteReader(bytes, from: 8, to: count, subject: subject)
        do {
            let version = try r.u16("format version")
            guard version == ContainerFormat.version else {
                throw ContainerError(.notAContainer, subject: subject,
                                     reason: "container format version \(version) is not supported (this build reads \(ContainerFormat.version))")
            }
            let length = try r.u16("header length")
            let flags = try r.u32("header flags")
            guard length == count, flags == 0 else { throw r.malformed("header", "length \(length) or flags \(flags) not supported") }
            let id = try r.array(16, "container id")
            let vm = try r.array(16, "VM UUID")
            let created = try r.u64("created")
            let check = try r.array(8, "header checksum")
            guard Array(try SHA256.hash(Array(bytes[0..<56])).prefix(8)) == check else {
                throw ContainerError(.malformed, subject: subject, reason: "header checksum does not match (bytes 0..<64 were changed)")
            }
            return Superblock(containerID: id, vm: uuid(from: vm), created: created)
        } catch let error as ByteCodecError {
            throw ContainerError.parsing(error, "the superblock")
        }
    }
}
