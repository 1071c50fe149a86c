// Fuzz target: the sealed stream reader. The input replaces the start of the stream
// record's body (its 48-byte stream header, then the sealed chunks) in a fixed valid
// container, Vectors/formats/containers/basic.state ("vm.runtime", 40,000 bytes); the
// record's length stays, its check is recomputed. The container is unlocked with its
// vault and the stream read whole, as a blob and chunk by chunk, all in memory (the
// container's memory storage, no file I/O). The custom mutator
// repairs the stream header's own check most of the time, so that the fuzzer reaches
// chunk sizes, lengths and chunk counts the reader must refuse.
// See docs/RELIABILITY.md; build and run with FuzzTesting/run.sh.

import Foundation
import FuzzSupport
import GuestVaultCrypto
import GuestVaultKeys
@_spi(Testing) import GuestVaultState

/// The container the inputs are spliced into, and where its stream record is.
struct Base {
    let bytes: [UInt8]
    /// Offset of the stream record's header, and its body length.
    let record: Int
    let length: Int
    let entry: String

    static let shared: Base = {
        let path = ProcessInfo.processInfo.environment["GUESTVAULT_FUZZ_STREAM_BASE"]
            ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("Vectors/formats/containers/basic.state").path
        guard let data = FileManager.default.contents(atPath: path) else {
            fatalError("fuzz harness: cannot read the base container \(path) (set GUESTVAULT_FUZZ_STREAM_BASE)")
        }
        let bytes = Array(data)
        var offset = 4096
        while offset + 32 <= bytes.count, Array(bytes[offset..<(offset + 4)]) == Array("GVLR".utf8) {
            let length = bytes[(offset + 8)..<(offset + 16)].reduce(0) { $0 << 8 | Int($1) }
            if bytes[offset + 4] == 2 {
                return Base(bytes: bytes, record: offset, length: length, entry: "vm.runtime")
            }
            offset += 32 + length
        }
        fatalError("fuzz harness: \(path) has no stream record")
    }()

    /// The base with the start of the stream record's body replaced by `input`.
    func splice(_ input: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        let bodyStart = record + 32
        var body = Array(bytes[bodyStart..<(bodyStart + length)])
        let replaced = min(input.count, length)
        body.replaceSubrange(0..<replaced, with: input[0..<replaced])
        let header = ContainerChecks.recordHeader(kind: 2, bodyLength: UInt64(length), checked: Array(body.prefix(48)))
        return Array(bytes[0..<record]) + header + body + Array(bytes[(bodyStart + length)...])
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let base = Base.shared
    let container: GuestStateContainer
    do {
        container = try GuestStateContainer.open(bytes: base.splice(UnsafeBufferPointer(start: data, count: size)), name: "input.state")
        try container.unlock(with: UnlockCredentials(vault: FixedVault.containers), allowRollback: true)
    } catch {
        return 0
    }
    var total = 0
    do {
        try container.readStream(base.entry) { total += $0.count }
    } catch {}
    _ = try? container.read(base.entry)
    for index: UInt64 in [0, 1, 2, .max] {
        _ = try? container.readChunk(base.entry, index: index)
    }
    return 0
}

@_cdecl("LLVMFuzzerCustomMutator")
public func mutate(_ data: UnsafeMutablePointer<UInt8>, _ size: Int, _ maxSize: Int, _ seed: UInt32) -> Int {
    mutateAndRepair(data, size, maxSize, seed, repair: ContainerChecks.repairStreamHeader)
}

/// `GUESTVAULT_FUZZ_MAKE_SEEDS=DIR FuzzStreamReader` writes the seeds (the base's own
/// stream header, alone and with the start of the first chunk) into DIR and exits.
@_cdecl("LLVMFuzzerInitialize")
public func initialize(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    if let directory = ProcessInfo.processInfo.environment["GUESTVAULT_FUZZ_MAKE_SEEDS"] {
        let base = Base.shared
        let body = Array(base.bytes[(base.record + 32)..<(base.record + 32 + base.length)])
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for (name, count) in [("seed-header", 48), ("seed-header-chunk", 256)] {
                try Data(body.prefix(count)).write(to: URL(fileURLWithPath: "\(directory)/\(name)"))
                print("seed: \(directory)/\(name): \(count) bytes")
            }
        } catch {
            fatalError("could not write the seeds: \(error)")
        }
        exit(0)
    }
    return 0
}
