// Fuzz target: the container reader. The input is a whole container file, written to
// one temporary file per process and opened read-only without keys (superblock, log
// scan, commit manifests, slot lists); when it is a container of the fixed vault (as
// the seeds are), it is also unlocked and every entry is read: blobs, streams whole,
// and single stream chunks. The custom mutator repairs the format's unkeyed checks
// after libFuzzer's mutation, as anyone editing a file can, so that the fuzzer gets
// past them. See docs/RELIABILITY.md; build and run with FuzzTesting/run.sh.

import Foundation
import FuzzSupport
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState

let inputPath = FuzzWorkspace.file("input.state")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    FuzzWorkspace.replaceContents(of: inputPath, with: UnsafeRawBufferPointer(start: data, count: size))
    readEverything(at: inputPath)
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

func readEverything(at path: String) {
    let container: GuestStateContainer
    do {
        container = try GuestStateContainer.open(at: path)
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
