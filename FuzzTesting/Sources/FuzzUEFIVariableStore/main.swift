// Fuzz target: the UEFI variable store parser (`VariableStore.parse`), the signature list
// parser and the certificate subject walker behind `guestvault uefi list|show`. The first
// input byte chooses how the rest is read: bit 0 repairs the firmware volume around the
// bytes (FvLength, a one-entry block map and the store size set to the input's length,
// checksum recomputed), so that mutations reach the store and its variables instead of
// stopping at the checksum; without it the bytes are parsed as they are.
// Errors must be UEFIFormatErrors (typed throws) of category integrity; a store that
// parses must be consistent with its input, and its summary must build.
// See docs/UEFI.md and docs/RELIABILITY.md; build and run with FuzzTesting/run.sh.

import Foundation
import GuestVaultCore
import GuestVaultUEFI

enum Repair {
    static func u16(_ bytes: [UInt8], _ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }

    static func put(_ bytes: inout [UInt8], _ at: Int, _ value: UInt64, _ width: Int) {
        for index in 0..<width { bytes[at + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }

    /// Makes the volume header agree with the input's length and fixes its checksum.
    static func volume(_ bytes: inout [UInt8]) {
        guard bytes.count >= 72 else { return }
        let count = UInt64(bytes.count)
        let headerLength = u16(bytes, 48)
        put(&bytes, 32, count, 8)
        if headerLength >= 72 {
            put(&bytes, 56, 1, 4)
            put(&bytes, 60, count, 4)
            put(&bytes, 64, 0, 8)
        }
        if headerLength + 20 <= bytes.count {
            put(&bytes, headerLength + 16, count - UInt64(headerLength), 4)
        }
        guard headerLength % 2 == 0, headerLength <= bytes.count, headerLength >= 52 else { return }
        put(&bytes, 50, 0, 2)
        var sum: UInt16 = 0
        for index in stride(from: 0, to: headerLength, by: 2) { sum &+= UInt16(u16(bytes, index)) }
        put(&bytes, 50, UInt64(0 &- sum), 2)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    var bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    if data[0] & 1 != 0 { Repair.volume(&bytes) }
    let store: VariableStore
    do {
        store = try VariableStore.parse(bytes)
    } catch {
        precondition(error.category == .integrity, "a parse error outside the integrity category: \(error.message)")
        precondition(!error.message.isEmpty)
        return 0
    }
    // The store is inside the volume, the volume inside the input, every variable inside the store.
    let storeEnd = store.header.offset + Int(store.header.size)
    precondition(store.volume.length <= UInt64(bytes.count) && storeEnd <= Int(store.volume.length))
    var previous = store.header.offset
    for variable in store.variables {
        precondition(variable.offset >= previous && variable.offset % 4 == 0, "variables out of order or unaligned")
        precondition(variable.dataOffset + variable.data.count <= storeEnd, "a variable's data is past the store")
        precondition(Array(bytes[variable.dataOffset..<(variable.dataOffset + variable.data.count)]) == variable.data)
        previous = variable.dataOffset + variable.data.count
    }
    precondition(store.liveVariables.allSatisfy { $0.status.isLive })
    let summary = SecureBootSummary(store)
    _ = try? JSONEncoder().encode(summary)
    // Every live variable's data as a signature database too: arbitrary bytes for that parser.
    for variable in store.liveVariables {
        do {
            let lists = try SignatureList.parseAll(variable.data, base: variable.dataOffset, context: variable.printableName)
            for list in lists where list.type == .certX509 {
                for entry in list.entries {
                    if let subject = try? CertificateSubject.subject(ofDER: entry.data, context: "fuzz") {
                        precondition(!subject.unicodeScalars.contains { $0.properties.generalCategory == .control })
                    }
                }
            }
        } catch {
            precondition(error.kind == .signatureList)
        }
    }
    return 0
}

/// `GUESTVAULT_FUZZ_MAKE_SEEDS=DIR FuzzUEFIVariableStore` writes the seeds into DIR and
/// exits: Debian's OVMF templates cut to the part that holds variables (the 4 MiB files
/// themselves are not committed), each as a consistent volume, with option byte 1.
@_cdecl("LLVMFuzzerInitialize")
public func initialize(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    guard let directory = ProcessInfo.processInfo.environment["GUESTVAULT_FUZZ_MAKE_SEEDS"] else { return 0 }
    do {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        func save(_ name: String, from template: String, cut: (VariableStore) -> Int) throws {
            let full = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "/usr/share/OVMF/\(template)")))
            let count = cut(try VariableStore.parse(full))
            var bytes = Array(full.prefix(count))
            Repair.volume(&bytes)
            _ = try VariableStore.parse(bytes)
            try Data([1] + bytes).write(to: URL(fileURLWithPath: "\(directory)/seed-\(name)"))
            print("seed: \(directory)/seed-\(name): \(bytes.count + 1) bytes")
        }
        func end(_ store: VariableStore, after name: String) -> Int {
            let variable = store.variables.last { $0.name == name }!
            return (variable.dataOffset + variable.data.count + 3) & ~3
        }
        // All variables of the Microsoft template and 64 bytes of free space.
        try save("ms-used", from: "OVMF_VARS_4M.ms.fd") { $0.endOfVariables + 64 }
        // From the start to the end of PK (db, dbx, KEK, PK and the variables before them).
        try save("ms-to-pk", from: "OVMF_VARS_4M.ms.fd") { end($0, after: "PK") }
        // An empty store (setup mode) from each size of template.
        try save("blank-4m", from: "OVMF_VARS_4M.fd") { $0.header.offset + 28 + 64 }
        try save("blank-2m", from: "OVMF_VARS.fd") { $0.header.offset + 28 + 64 }
        try save("snakeoil-used", from: "OVMF_VARS_4M.snakeoil.fd") { $0.endOfVariables + 4 }
    } catch {
        fatalError("could not write the seeds: \(error)")
    }
    exit(0)
}
