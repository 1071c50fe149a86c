import Foundation
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultVectors
import Testing

/// Vectors/formats/containers: containers made with a fixed root key, the entries they
/// must yield, and tampered copies with the error each must give. Set
/// GUESTVAULT_WRITE_VECTORS=1 to write them anew into the source tree.
@Suite struct ContainerVectorTests {
    struct Manifest: Codable {
        struct Entry: Codable { let name: String; let size: Int; let sha256: String }
        struct File: Codable {
            let file: String
            let description: String
            /// "ok", or the error code the file must give.
            let expect: String
            /// Where the error shows: "open" (no keys), "unlock", "read".
            let stage: String
            /// For rollback cases: the generation the vault has already seen.
            let vaultHasSeen: UInt64?
        }
        let source: String
        let rootKey: String
        let vm: String
        let generation: UInt64
        let entries: [Entry]
        let files: [File]
    }

    static let root = SecretBytes(copying: (0..<32).map { UInt8(0x30 + $0) })
    static let vm = UUID(uuidString: "6f1d2c3b-4a59-4e68-8d7c-0b1a2f3e4d5c")!

    @Test(.enabled(if: ProcessInfo.processInfo.environment["GUESTVAULT_WRITE_VECTORS"] == "1"))
    func writeVectors() throws {
        let out = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Vectors/formats/containers").path
        let dir = TemporaryDirectory("vectors")
        let vault = try KeyVault.createFileVault(at: dir.file("vault"), importing: Self.root)
        let path = dir.file("basic.state")
        let entries: [String: [UInt8]] = [
            "tpm.permanent": (0..<1500).map { UInt8(truncatingIfNeeded: $0 &* 7) },
            "uefi.nvram": (0..<512).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 1) },
            "vm.id": Array(LabelsForVectors.uuid(Self.vm)),
        ]
        do {
            let c = try GuestStateContainer.create(at: path, vm: Self.vm, vault: vault)
            try c.write("tpm.permanent", [UInt8](repeating: 0, count: 1500))
            try c.write("uefi.nvram", entries["uefi.nvram"]!)
            try c.commit()
            try c.write("tpm.permanent", entries["tpm.permanent"]!)
            try c.write("vm.id", entries["vm.id"]!)
            var pieces = 0
            try c.writeStream("vm.runtime") { buffer in
                guard pieces < 1 else { return 0 }
                pieces += 1
                for i in 0..<40_000 { buffer[i] = UInt8(truncatingIfNeeded: i &* 3) }
                return 40_000
            }
            try c.commit()
        }
        let info = try GuestStateContainer.open(at: path).info
        let logEnd = 4096 + Int(info.logBytes)
        let basic = Array(try FileSystem.readFile(path, limit: 64 << 20)[0..<logEnd])
        var all = entries
        all["vm.runtime"] = (0..<40_000).map { UInt8(truncatingIfNeeded: $0 &* 3) }

        var files: [Manifest.File] = []
        func save(_ name: String, _ bytes: [UInt8], _ description: String, expect: String, stage: String, seen: UInt64? = nil) throws {
            try FileSystem.writeAtomically(bytes, to: "\(out)/\(name)", mode: 0o644)
            files.append(.init(file: name, description: description, expect: expect, stage: stage, vaultHasSeen: seen))
        }
        try save("basic.state", basic, "three blobs and a 40,000-byte stream at generation 3", expect: "ok", stage: "read")

        let records = try recordOffsets(basic)
        let blob = records.first { $0.kind == 1 && $0.length == 1500 + 16 && $0.offset > records.first { $0.kind == 3 }!.offset + 300 }!
        var flipped = basic
        flipped[blob.offset + 32 + 100] ^= 0x01
        try fixCheck(&flipped, blob)
        try save("tampered-entry-bit.state", flipped, "one bit of tpm.permanent's ciphertext flipped, record check recomputed",
                 expect: "authenticationFailed", stage: "read")

        let lastCommit = records.last { $0.kind == 3 }!
        var metadata = basic
        metadata[lastCommit.offset + 32 + 15] ^= 0x01   // the commit timestamp
        try fixCheck(&metadata, lastCommit)
        try save("tampered-metadata.state", metadata, "the last commit's timestamp changed, record check recomputed",
                 expect: "authenticationFailed", stage: "unlock")

        try save("truncated.state", Array(basic[0..<(lastCommit.offset + 40)]), "cut inside the last commit: generation 2 remains",
                 expect: "rollback", stage: "unlock", seen: 3)

        var magic = basic
        magic[0] ^= 0x20
        try save("bad-magic.state", magic, "the first byte of the magic changed", expect: "notAContainer", stage: "open")

        var padding = basic
        padding[2000] = 1
        try save("bad-padding.state", padding, "a non-zero byte in the header padding", expect: "malformed", stage: "open")

        // The same entry name from another container of the same VM and vault.
        let otherPath = dir.file("other.state")
        do {
            let other = try GuestStateContainer.create(at: otherPath, vm: Self.vm, vault: vault)
            try other.write("tpm.permanent", entries["tpm.permanent"]!)
            try other.commit()
        }
        let otherBytes = try FileSystem.readFile(otherPath, limit: 64 << 20)
        let otherBlob = try recordOffsets(otherBytes).first { $0.kind == 1 }!
        var swapped = basic
        swapped.replaceSubrange(blob.offset..<(blob.offset + 32 + blob.length),
                                with: otherBytes[otherBlob.offset..<(otherBlob.offset + 32 + otherBlob.length)])
        try save("swapped-entry.state", swapped, "tpm.permanent replaced by the same entry sealed in another container",
                 expect: "authenticationFailed", stage: "read")

        let manifest = Manifest(
            source: "GuestVault docs/FORMAT.md; written by Tests/GuestVaultStateTests/ContainerVectorTests.swift",
            rootKey: hexString(Self.root.unsafeCopyOfBytes()), vm: Self.vm.uuidString.lowercased(), generation: info.generation,
            entries: all.keys.sorted().map { Manifest.Entry(name: $0, size: all[$0]!.count, sha256: hexString(try! SHA256.hash(all[$0]!))) },
            files: files)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try FileSystem.writeAtomically(Array(try encoder.encode(manifest)) + [10], to: "\(out)/containers.json", mode: 0o644)
    }

    @Test func everyVectorGivesItsExpectedResult() throws {
        let manifest = try JSONDecoder().decode(Manifest.self, from: VectorFiles.formatVectorData("containers/containers.json"))
        var checked = 0
        for vector in manifest.files {
            let dir = TemporaryDirectory("vector")
            let vault = try KeyVault.createFileVault(at: dir.file("vault"), importing: SecretBytes(copying: bytes(fromHex: manifest.rootKey)!))
            let vm = UUID(uuidString: manifest.vm)!
            if let seen = vector.vaultHasSeen { try vault.counters.record(vm: vm, generation: seen) }
            let path = dir.file(vector.file)
            try FileSystem.writeAtomically(Array(try VectorFiles.formatVectorData("containers/\(vector.file)")), to: path)
            var stage = "open"
            do {
                let container = try GuestStateContainer.open(at: path)
                stage = "unlock"
                try container.unlock(with: UnlockCredentials(vault: vault))
                stage = "read"
                #expect(container.generation == manifest.generation)
                for entry in manifest.entries {
                    var hasher = try SHA256()
                    var size = 0
                    try container.readStream(entry.name) { try hasher.update($0); size += $0.count }
                    let digest = hexString(try hasher.finalize())
                    #expect(size == entry.size && digest == entry.sha256, "\(vector.file): \(entry.name)")
                }
                #expect(vector.expect == "ok", "\(vector.file) was accepted: \(vector.description)")
            } catch let error as ContainerError {
                #expect(vector.expect == error.code.name && vector.stage == stage,
                        "\(vector.file): expected \(vector.expect) at \(vector.stage), got \(error.code) at \(stage): \(error)")
            }
            checked += 1
        }
        print("vectors: containers.json: \(checked) container files checked")
        #expect(checked == manifest.files.count && checked >= 7)
    }

    struct RecordAt { let offset: Int; let kind: UInt8; let length: Int }

    func recordOffsets(_ file: [UInt8]) throws -> [RecordAt] {
        var result: [RecordAt] = []
        var offset = 4096
        while offset + 32 <= file.count, Array(file[offset..<(offset + 4)]) == Array("GVLR".utf8) {
            let length = file[(offset + 8)..<(offset + 16)].reduce(0) { $0 << 8 | Int($1) }
            result.append(RecordAt(offset: offset, kind: file[offset + 4], length: length))
            offset += 32 + length
        }
        return result
    }

    /// Recomputes a blob or commit record's check, as an attacker can.
    func fixCheck(_ file: inout [UInt8], _ record: RecordAt) throws {
        var hash = try SHA256()
        try hash.update(Array(file[record.offset..<(record.offset + 16)]))
        try hash.update(Array(file[(record.offset + 32)..<(record.offset + 32 + record.length)]))
        file.replaceSubrange((record.offset + 16)..<(record.offset + 32), with: try hash.finalize().prefix(16))
    }
}

enum LabelsForVectors {
    static func uuid(_ id: UUID) -> [UInt8] { withUnsafeBytes(of: id.uuid) { Array($0) } }
}
