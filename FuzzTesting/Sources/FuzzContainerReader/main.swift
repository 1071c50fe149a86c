// Fuzz target: the container reader. The input is a whole container file, opened
// read-only in memory (the container's memory storage: the same format code as a file,
// no file I/O) without keys (superblock, log scan, commit manifests, slot lists); when
// it is a container of the fixed vault (as
// the seeds are), it is also unlocked and every entry is read: blobs, streams whole,
// and single stream chunks. The custom mutator repairs the format's unkeyed checks
// after libFuzzer's mutation, as anyone editing a file can, so that the fuzzer gets
// past them. See docs/RELIABILITY.md; build and run with FuzzTesting/run.sh.

import Foundation
import FuzzSupport
import GuestVaultCrypto
import GuestVaultKeys
@_spi(Testing) import GuestVaultState

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    readEverything(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

@_cdecl("LLVMFuzzerCustomMutator")
public func mutate(_ data: UnsafeMutablePointer<UInt8>, _ size: Int, _ maxSize: Int, _ seed: UInt32) -> Int {
    mutateAndRepair(data, size, maxSize, seed, repair: ContainerChecks.repair)
}

/// `GUESTVAULT_FUZZ_MAKE_SEEDS=DIR FuzzContainerReader` writes the seed containers into
/// DIR and exits (FuzzTesting/make-corpus.sh).
@_cdecl("LLVMFuzzerInitialize")
public func initialize(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    if let directory = ProcessInfo.processInfo.environment["GUESTVAULT_FUZZ_MAKE_SEEDS"] {
        do {
            try SeedContainers.write(into: directory)
        } catch {
            fatalError("could not write the seed containers: \(error)")
        }
        exit(0)
    }
    return 0
}

func readEverything(_ bytes: [UInt8]) {
    let container: GuestStateContainer
    do {
        container = try GuestStateContainer.open(bytes: bytes, name: "input.state")
    } catch {
        return
    }
    _ = container.info
    do {
        try container.unlock(with: UnlockCredentials(vault: FixedVault.containers), allowRollback: true)
    } catch {
        return
    }
    for name in container.entryNames {
        var total = 0
        do {
            try container.readStream(name) { total += $0.count }
        } catch {}
        _ = try? container.read(name)
        for index: UInt64 in [0, 1, .max] {
            _ = try? container.readChunk(name, index: index)
        }
    }
}
