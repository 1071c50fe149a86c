import Foundation
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import Testing

/// A vault and a container made in a temporary directory.
struct Fixture {
    let dir = TemporaryDirectory("guestvault-state")
    let vault: KeyVault
    let vm = UUID()
    var statePath: String { dir.file("vm.state") }

    init() throws {
        vault = try KeyVault.createFileVault(at: dir.file("vault"))
    }

    func create() throws -> GuestStateContainer {
        try GuestStateContainer.create(at: statePath, vm: vm, vault: vault)
    }

    func openUnlocked(_ access: GuestStateContainer.Access = .readOnly, allowRollback: Bool = false) throws -> GuestStateContainer {
        let container = try GuestStateContainer.open(at: statePath, access: access)
        try container.unlock(with: UnlockCredentials(vault: vault), allowRollback: allowRollback)
        return container
    }
}

@Suite struct ContainerTests {
    @Test func createWriteCommitReopenRead() throws {
        let f = try Fixture()
        let container = try f.create()
        #expect(container.generation == 1)
        #expect(mode(of: f.statePath) == 0o600)
        try container.write(EntryName.tpmPermanent, Array(repeating: 0xA5, count: 6000))
        try container.write(EntryName.uefiNVRAM, Array(0..<255))
        try container.write(EntryName.vmID, [])
        #expect(try container.commit() == 2)
        try container.write(EntryName.tpmPermanent, Array(repeating: 0x5A, count: 6100))
        try container.remove(EntryName.vmID)
        #expect(try container.commit() == 3)

        let reopened = try f.openUnlocked()
        #expect(reopened.generation == 3)
        #expect(reopened.entryNames == [EntryName.tpmPermanent, EntryName.uefiNVRAM])
        #expect(try reopened.read(EntryName.tpmPermanent) == Array(repeating: 0x5A, count: 6100))
        #expect(try reopened.read(EntryName.uefiNVRAM) == Array(0..<255))
        let missing = try #require(throws: ContainerError.self) { try reopened.read(EntryName.vmID) }
        #expect(missing.code == .noSuchEntry)
    }

    @Test func inspectNeedsNoKeys() throws {
        let f = try Fixture()
        let container = try f.create()
        try container.write("tpm.permanent", Array(repeating: 1, count: 1234))
        try container.commit()
        let info = try GuestStateContainer.open(at: f.statePath).info
        #expect(info.vm == f.vm)
        #expect(info.generation == 2)
        #expect(info.entries == [EntryInfo(name: "tpm.permanent", kind: "blob", size: 1234, sealedGeneration: 2)])
        #expect(info.slots.count == 1 && info.slots[0].kind == "vault")
        let locked = try GuestStateContainer.open(at: f.statePath)
        let error = try #require(throws: ContainerError.self) { try locked.read("tpm.permanent") }
        #expect(error.code == .notUnlocked)
    }

    @Test func oneWriterAtATimeAndTheHolderIsNamed() throws {
        let f = try Fixture()
        let writer = try f.create()
        let error = try #require(throws: ContainerError.self) { try GuestStateContainer.open(at: f.statePath, access: .readWrite) }
        #expect(error.code == .locked)
        #expect(error.reason.contains("pid \(ProcessInfo.processInfo.processIdentifier)"))
        // Readers are not blocked.
        #expect(try GuestStateContainer.open(at: f.statePath).generation == writer.generation)
        _ = writer
    }

    @Test func anOlderCopyPutBackIsARollback() throws {
        let f = try Fixture()
        let container = try f.create()
        try container.write("tpm.permanent", [1, 2, 3])
        try container.commit()
        let old = try FileSystem.readFile(f.statePath, limit: 8 << 20)
        try container.write("tpm.permanent", [4, 5, 6])
        try container.commit()
        try FileSystem.writeAtomically(old, to: f.statePath)
        let error = try #require(throws: ContainerError.self) { try f.openUnlocked() }
        #expect(error.code == .rollback)
        #expect(error.reason.contains("generation 2") && error.reason.contains("generation 3"))
        let allowed = try f.openUnlocked(allowRollback: true)
        #expect(try allowed.read("tpm.permanent") == [1, 2, 3])
    }

    @Test func anEntryMovedIntoAnotherVMsContainerIsRefused() throws {
        let f = try Fixture()
        let a = try f.create()
        try a.write("tpm.permanent", Array(repeating: 0x11, count: 512))
        try a.commit()
        let otherPath = f.dir.file("other.state")
        let b = try GuestStateContainer.create(at: otherPath, vm: UUID(), vault: f.vault)
        try b.write("tpm.permanent", Array(repeating: 0x22, count: 512))
        try b.commit()
        // Transplant A's sealed record (header and body) over B's, as an attacker with
        // both files would; record checks are not secret, so they still pass.
        let recordA = try sealedRecord(path: f.statePath, name: "tpm.permanent", size: 512)
        var fileB = try FileSystem.readFile(otherPath, limit: 8 << 20)
        let offsetB = try recordOffset(in: fileB, bodyLength: 512 + 16)
        fileB.replaceSubrange(offsetB..<(offsetB + recordA.count), with: recordA)
        try FileSystem.writeAtomically(fileB, to: otherPath)
        let opened = try GuestStateContainer.open(at: otherPath)
        try opened.unlock(with: UnlockCredentials(vault: f.vault))
        let error = try #require(throws: ContainerError.self) { try opened.read("tpm.permanent") }
        #expect(error.code == .authenticationFailed)
    }

    @Test func slotsKEKRotationAndDEKRotation() throws {
        let f = try Fixture()
        let container = try f.create()
        try container.write("uefi.nvram", Array(repeating: 7, count: 3000))
        try container.writeStream("vm.runtime", from: pattern(total: 3 << 20 + 5))
        try container.commit()
        let recovery = try X25519.PrivateKey()
        try container.addSlot { try .wrapForRecipient($0, recipient: recovery.publicKey, vm: f.vm) }
        let before = try FileSystem.readFile(f.statePath, limit: 64 << 20).count
        try container.rotateKEK(to: 2)
        #expect(try FileSystem.readFile(f.statePath, limit: 64 << 20).count == before, "KEK rotation only appends a commit")
        guard case .vault(_, let epoch, _) = container.slots.slots[0] else { Issue.record("no vault slot"); return }
        #expect(epoch == 2)
        let byRecovery = try GuestStateContainer.open(at: f.statePath)
        #expect(try byRecovery.unlock(with: UnlockCredentials(recipientKeys: [recovery])) == 1)
        #expect(try byRecovery.read("uefi.nvram") == Array(repeating: 7, count: 3000))

        let generation = try container.rotateDEK()
        let reopened = try f.openUnlocked()
        #expect(reopened.generation == generation)
        #expect(try reopened.read("uefi.nvram") == Array(repeating: 7, count: 3000))
        var streamed: [UInt8] = []
        try reopened.readStream("vm.runtime") { streamed += $0 }
        #expect(streamed == collect(pattern(total: 3 << 20 + 5)))
        let chunk = ContainerFormat.chunkSize
        #expect(try reopened.readChunk("vm.runtime", index: UInt64(streamed.count / chunk)) == Array(streamed[(streamed.count / chunk * chunk)...]))
        #expect(try reopened.readChunk("vm.runtime", index: 1) == Array(streamed[chunk..<(2 * chunk)]))
        let byRecoveryAfter = try GuestStateContainer.open(at: f.statePath)
        #expect(try byRecoveryAfter.unlock(with: UnlockCredentials(recipientKeys: [recovery])) == 1, "recipient slots follow the new DEK")
    }

    @Test func compactionKeepsContentAndShrinksTheFile() throws {
        let f = try Fixture()
        let container = try f.create()
        for i in 0..<1500 {
            try container.write("tpm.permanent", Array(repeating: UInt8(i & 0xff), count: 8192))
            try container.commit()
        }
        let size = try FileSystem.readFile(f.statePath, limit: 64 << 20).count
        #expect(size < 8 << 20 + 2 << 20, "the log was compacted (size \(size))")
        let reopened = try f.openUnlocked()
        #expect(reopened.generation == 1501)
        #expect(try reopened.read("tpm.permanent") == Array(repeating: UInt8(1499 & 0xff), count: 8192))
    }

    @Test func badNamesAndLimits() throws {
        let f = try Fixture()
        let container = try f.create()
        for bad in ["", " lead", "trail ", "a\u{0}b", "new\nline", String(repeating: "x", count: 256)] {
            let error = try #require(throws: ContainerError.self) { try container.write(bad, [1]) }
            #expect(error.code == .invalidName)
        }
        let tooBig = try #require(throws: ContainerError.self) { try container.write("big", [UInt8](repeating: 0, count: (64 << 20) + 1)) }
        #expect(tooBig.code == .limit)
        let readOnly = try f.openUnlocked()
        #expect(throws: ContainerError.self) { try readOnly.write("x", [1]) }
        #expect(throws: ContainerError.self) { try GuestStateContainer.create(at: f.statePath, vm: f.vm, vault: f.vault) }
    }
}

/// A deterministic byte source of `total` bytes, in uneven pieces.
func pattern(total: Int) -> (inout [UInt8]) throws -> Int {
    var produced = 0
    return { buffer in
        let n = min(buffer.count, total - produced, 100_000 + produced % 777)
        for i in 0..<n { buffer[i] = UInt8(truncatingIfNeeded: (produced + i) &* 31 &+ (produced + i) >> 12) }
        produced += n
        return n
    }
}

func collect(_ source: (inout [UInt8]) throws -> Int) -> [UInt8] {
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while let n = try? source(&buffer), n > 0 { out += buffer[0..<n] }
    return out
}

/// The first blob record (header and body) whose body is `bodyLength` bytes.
func recordOffset(in file: [UInt8], bodyLength: Int) throws -> Int {
    var offset = 4096
    while offset + 32 <= file.count, Array(file[offset..<(offset + 4)]) == Array("GVLR".utf8) {
        let length = file[(offset + 8)..<(offset + 16)].reduce(0) { $0 << 8 | Int($1) }
        if file[offset + 4] == 1 && length == bodyLength { return offset }
        offset += 32 + length
    }
    throw ContainerError(.noSuchEntry, subject: "test", reason: "no record of \(bodyLength) bytes")
}

func sealedRecord(path: String, name: String, size: Int) throws -> [UInt8] {
    let file = try FileSystem.readFile(path, limit: 64 << 20)
    let offset = try recordOffset(in: file, bodyLength: size + 16)
    return Array(file[offset..<(offset + 32 + size + 16)])
}
