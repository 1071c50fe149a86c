public import Foundation
import GuestVaultCore

/// The MANIFEST frame's payload (docs/TRANSFER.md §4.2), 64 bytes:
///
/// ```
/// 0   16  transfer id
/// 16  16  VM UUID
/// 32  16  container id
/// 48   8  generation (u64)
/// 56   8  length of the container bytes sent (u64)
/// ```
public struct TransferManifest: Equatable, Sendable {
    public static let count = 64

    public var transferID: [UInt8]
    public var vm: UUID
    public var containerID: [UInt8]
    public var generation: UInt64
    public var length: UInt64

    public init(transferID: [UInt8], vm: UUID, containerID: [UInt8], generation: UInt64, length: UInt64) {
        self.transferID = transferID
        self.vm = vm
        self.containerID = containerID
        self.generation = generation
        self.length = length
    }

    public var bytes: [UInt8] {
        var out = ByteWriter(capacity: Self.count)
        out.raw(transferID)
        out.raw(withUnsafeBytes(of: vm.uuid) { Array($0) })
        out.raw(containerID)
        out.u64(generation)
        out.u64(length)
        return out.bytes
    }

    /// Parses a manifest payload; anything but 64 bytes is refused.
    public static func parse(_ payload: [UInt8]) throws -> TransferManifest {
        var reader = ByteReader(payload, subject: "the MANIFEST frame")
        do {
            let transferID = try reader.array(16, "transfer id")
            let v = try reader.array(16, "VM UUID")
            let containerID = try reader.array(16, "container id")
            let generation = try reader.u64("generation")
            let length = try reader.u64("length")
            try reader.expectEnd("manifest")
            let vm = UUID(uuid: (v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]))
            return TransferManifest(transferID: transferID, vm: vm, containerID: containerID, generation: generation, length: length)
        } catch {
            throw TransferError(.unexpectedFrame, "expected a manifest of \(count) bytes, got \(payload.count)", underlying: error)
        }
    }

    /// The transfer id in the partial file's name.
    var transferIDHex: String { transferID.map { String(format: "%02x", $0) }.joined() }
}

/// The FINAL frame's payload (docs/TRANSFER.md §4.4), 72 bytes: the container length,
/// SHA-256 of the bytes the receiver kept from earlier sessions, and the sender's
/// transcript hash before this frame.
struct FinalPayload: Equatable {
    static let count = 72

    var length: UInt64
    var keptDigest: [UInt8]
    var transcript: [UInt8]

    var bytes: [UInt8] {
        var out = ByteWriter(capacity: Self.count)
        out.u64(length)
        out.raw(keptDigest)
        out.raw(transcript)
        return out.bytes
    }

    static func parse(_ payload: ArraySlice<UInt8>) throws -> FinalPayload {
        var reader = ByteReader(payload, subject: "the FINAL frame")
        do {
            let value = FinalPayload(length: try reader.u64("length"), keptDigest: try reader.array(32, "digest of the kept bytes"),
                                     transcript: try reader.array(32, "transcript"))
            try reader.expectEnd("final frame")
            return value
        } catch {
            throw TransferError(.unexpectedFrame, "a final frame of \(payload.count) bytes; expected \(count)", underlying: error)
        }
    }
}

/// An 8-byte big-endian offset or generation: the ACK, DONE and DATA-offset payloads.
enum Offset64 {
    static func bytes(_ value: UInt64) -> [UInt8] { value.bigEndianBytes }

    static func parse(_ payload: some Collection<UInt8>, _ what: String) throws -> UInt64 {
        guard payload.count == 8, let value = UInt64(bigEndianBytes: payload) else {
            throw TransferError(.unexpectedFrame, "\(what) of \(payload.count) bytes; expected 8")
        }
        return value
    }
}
