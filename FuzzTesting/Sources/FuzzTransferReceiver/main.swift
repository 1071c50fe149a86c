// Fuzz target: the transfer receiver (`ContainerTransfer.receive`): its frame decoder
// and its protocol state machine, against an authenticated sender that sends what the
// input says (GuestVaultTransferTesting.ScriptedSender, written from docs/TRANSFER.md).
// Tampering in transit only ever reaches the tag check; a hostile or broken sender that
// holds the keys reaches everything after it, and that is what this target plays.
//
// The input is a list of steps (below). The sender's container is
// Vectors/formats/containers/basic.state (its vault: the fixed root key 0x30...0x4f);
// steps can send its real manifest, DEK and bytes, changed by the input, so the fuzzer
// reaches DATA, FINAL and the commit from the first seed. After each run: a receiver
// that succeeded has a container at the destination that opens in its vault at the
// generation it reported, and the sender got DONE; a receiver that failed threw a
// TransferError, left nothing at the destination, and told the sender nothing local.
// See docs/RELIABILITY.md; build and run with FuzzTesting/run.sh.

import Foundation
import FuzzSupport
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultTransfer
import GuestVaultTransferTesting

/// Steps, each an opcode byte (mod 8) and its operands (big-endian):
///   0 frame      type u8, length u16, payload      a frame with the next sequence number
///   1 manifest   64 bytes                           the real MANIFEST xor these bytes
///   2 key        32 bytes                           the real DEK xor these bytes
///   3 data       offset u32, count u16              DATA of the real bytes [offset, +count)
///   4 final      length u64                         FINAL with the right transcript
///   5 raw        length u16, bytes                  bytes outside any frame
///   6 numbered   type u8, sequence u64, length u16, payload
///   7 rest       —                                  DATA of the rest, from after the last DATA, 16 KiB a frame
/// A step cut short by the end of the input is dropped. An unknown frame type in 0 or 6
/// is sent as a raw header with that type byte.
enum Script {
    static func steps(_ input: [UInt8], source: ScriptedSender.Source) -> [ScriptedSender.Step] {
        var reader = Reader(input)
        var steps: [ScriptedSender.Step] = []
        var nextData = 0
        func data(_ offset: Int, _ count: Int) -> ScriptedSender.Step {
            let start = min(offset, source.bytes.count)
            let end = min(start + count, source.bytes.count)
            nextData = end
            return .frame(.data, bigEndian(UInt64(offset)) + source.bytes[start..<end])
        }
        func frame(_ type: UInt8, _ payload: [UInt8], sequence: UInt64?) -> ScriptedSender.Step {
            if let known = FrameType(rawValue: type) {
                if let sequence { return .frameNumbered(known, payload, sequence: sequence) }
                return .frame(known, payload)
            }
            let length = UInt32(truncatingIfNeeded: payload.count + 16)
            return .raw([UInt8(length >> 24), UInt8(truncatingIfNeeded: length >> 16), UInt8(truncatingIfNeeded: length >> 8),
                         UInt8(truncatingIfNeeded: length), type, 0, 0, 0] + bigEndian(sequence ?? 0) + payload)
        }
        while let op = reader.byte() {
            switch op % 8 {
            case 0:
                guard let type = reader.byte(), let length = reader.u16(), let payload = reader.bytes(Int(length)) else { return steps }
                steps.append(frame(type, payload, sequence: nil))
            case 1:
                guard let mask = reader.bytes(64) else { return steps }
                steps.append(.frame(.manifest, zip(source.manifest, mask).map { $0 ^ $1 }))
            case 2:
                guard let mask = reader.bytes(32) else { return steps }
                steps.append(.frame(.key, zip(source.key, mask).map { $0 ^ $1 }))
            case 3:
                guard let offset = reader.u32(), let count = reader.u16() else { return steps }
                steps.append(data(Int(offset), Int(count)))
            case 4:
                guard let length = reader.u64() else { return steps }
                steps.append(.final(length: length))
            case 5:
                guard let length = reader.u16(), let bytes = reader.bytes(Int(length)) else { return steps }
                steps.append(.raw(bytes))
            case 6:
                guard let type = reader.byte(), let sequence = reader.u64(), let length = reader.u16(),
                      let payload = reader.bytes(Int(length)) else { return steps }
                steps.append(frame(type, payload, sequence: sequence))
            default:
                while nextData < source.bytes.count { steps.append(data(nextData, 16 << 10)) }
            }
        }
        return steps
    }

    static func bigEndian(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64($0))) } }

    /// A well-formed transfer of the source: manifest, key, the bytes, FINAL.
    static func wellFormed(length: Int) -> [UInt8] {
        [1] + [UInt8](repeating: 0, count: 64) + [2] + [UInt8](repeating: 0, count: 32) + [7] + [4] + bigEndian(UInt64(length))
    }

    struct Reader {
        let input: [UInt8]
        var at = 0
        init(_ input: [UInt8]) { self.input = input }
        mutating func bytes(_ count: Int) -> [UInt8]? {
            guard input.count - at >= count else { return nil }
            defer { at += count }
            return Array(input[at..<(at + count)])
        }
        mutating func byte() -> UInt8? { bytes(1)?.first }
        mutating func u16() -> UInt16? { bytes(2).map { UInt16($0[0]) << 8 | UInt16($0[1]) } }
        mutating func u32() -> UInt32? { bytes(4).map { $0.reduce(UInt32(0)) { $0 << 8 | UInt32($1) } } }
        mutating func u64() -> UInt64? { bytes(8).map { $0.reduce(UInt64(0)) { $0 << 8 | UInt64($1) } } }
    }
}

/// The fixed parties: the sender's vault and container, the receiver's vault, and both
/// recipient keys.
enum Parties {
    static let container: String = {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../../Vectors/formats/containers/basic.state").standardized.path
        guard FileManager.default.fileExists(atPath: path) else { fatalError("fuzz harness: \(path) is missing") }
        return path
    }()
    static let source: ScriptedSender.Source = {
        do { return try ScriptedSender.Source(containerAt: container, vault: FixedVault.containers) } catch {
            fatalError("fuzz harness: basic.state does not open with the fixed vault: \(error)")
        }
    }()
    static let receivingVault = FixedVault.make("receiving-vault", rootKey: (0..<32).map { UInt8(0x50 + $0) })
    static let recipient = key(0x00)
    static let sender = key(0x20)
    static let destinationDirectory: String = {
        let path = FuzzWorkspace.file("received")
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    static func key(_ first: UInt8) -> X25519.PrivateKey {
        do { return try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: (0..<32).map { first &+ UInt8($0) })) } catch {
            fatalError("fuzz harness: \(error)")
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let steps = Script.steps(Array(UnsafeBufferPointer(start: data, count: size)), source: Parties.source)
    let destination = Parties.destinationDirectory + "/received.state"
    let sender: ScriptedSender
    let channel: ByteChannel
    do {
        sender = try ScriptedSender(.recipient(Parties.recipient.publicKey, sender: Parties.sender),
                                    ephemeral: Parties.key(0x90), random: (0..<32).map { 0xb0 &+ UInt8($0) })
        channel = try sender.channel(steps)
    } catch {
        fatalError("fuzz harness: the scripted sender could not start: \(error)")
    }
    let result = Result {
        try ContainerTransfer.receive(over: channel, into: destination, vault: Parties.receivingVault,
                                      authentication: .asRecipient(Parties.recipient, accepting: .only([Parties.sender.publicKey])),
                                      maximumBytes: 1 << 20)
    }
    switch result {
    case .success(let report):
        precondition(sender.replies.last?.type == .done, "the receiver committed but did not send DONE")
        do {
            let container = try GuestStateContainer.open(at: destination)
            try container.unlock(with: UnlockCredentials(vault: Parties.receivingVault))
            precondition(container.generation == report.generation, "the receiver reported generation \(report.generation), committed \(container.generation)")
            let entry = try container.read("tpm.permanent")
            precondition(!entry.isEmpty, "the received container lost its entries")
        } catch {
            preconditionFailure("the receiver committed a container that does not open: \(error)")
        }
    case .failure(let error):
        precondition(error is TransferError, "the receiver failed with \(type(of: error)), not a TransferError: \(error)")
        precondition(!FileManager.default.fileExists(atPath: destination), "a failed transfer left a container at the destination")
        for reply in sender.replies where reply.type == .error {
            let text = String(decoding: reply.payload, as: UTF8.self)
            precondition(!text.contains("/"), "an ERROR frame carries local detail: \(text)")
        }
    }
    // Every run starts from an empty directory: no partial file to resume from.
    for name in (try? FileManager.default.contentsOfDirectory(atPath: Parties.destinationDirectory)) ?? [] {
        try? FileManager.default.removeItem(atPath: Parties.destinationDirectory + "/" + name)
    }
    return 0
}

/// `GUESTVAULT_FUZZ_MAKE_SEEDS=DIR FuzzTransferReceiver` writes the seeds into DIR and
/// exits (FuzzTesting/make-corpus.sh): a well-formed transfer, and the same with the
/// data in pieces, out of order and cut short.
@_cdecl("LLVMFuzzerInitialize")
public func initialize(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    guard let directory = ProcessInfo.processInfo.environment["GUESTVAULT_FUZZ_MAKE_SEEDS"] else { return 0 }
    let length = Parties.source.bytes.count
    let header: [UInt8] = [1] + [UInt8](repeating: 0, count: 64) + [2] + [UInt8](repeating: 0, count: 32)
    func dataStep(_ offset: Int, _ count: Int) -> [UInt8] {
        [3, UInt8(offset >> 24), UInt8(truncatingIfNeeded: offset >> 16), UInt8(truncatingIfNeeded: offset >> 8), UInt8(truncatingIfNeeded: offset),
         UInt8(count >> 8), UInt8(truncatingIfNeeded: count)]
    }
    let final: [UInt8] = [4] + Script.bigEndian(UInt64(length))
    let seeds: [String: [UInt8]] = [
        "seed-well-formed": Script.wellFormed(length: length),
        "seed-pieces": header + dataStep(0, 4096) + dataStep(4096, 60000) + [7] + final,
        "seed-out-of-order": header + dataStep(4096, 4096) + dataStep(0, 4096) + [7] + final,
        "seed-cut": header + dataStep(0, 4096),
        "seed-literal-frames": [0, 1, 0, 64] + Parties.source.manifest + [0, 2, 0, 32] + Parties.source.key + [7] + final,
        "seed-numbered": [6, 1] + Script.bigEndian(0) + [0, 64] + Parties.source.manifest + [6, 2] + Script.bigEndian(5) + [0, 32] + Parties.source.key,
        "seed-raw-header": header + [5, 0, 16, 0x00, 0x40, 0x00, 0x10, 3, 0, 0, 0] + Script.bigEndian(2),
    ]
    do {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (name, bytes) in seeds { try Data(bytes).write(to: URL(fileURLWithPath: directory + "/" + name)) }
    } catch {
        fatalError("could not write the seeds: \(error)")
    }
    exit(0)
}
