import Foundation
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
@_spi(Testing) @testable import GuestVaultState
import GuestVaultSystem
import Testing

/// A vault on disk and containers in memory (``MemoryStorage``): the same format code as
/// a file, and crafted containers without touching the disk.
struct MemoryFixture {
    let dir = TemporaryDirectory("guestvault-memory")
    let vault: KeyVault
    let vm = UUID()

    init() throws {
        vault = try KeyVault.createFileVault(at: dir.file("vault"))
    }

    /// A new container in memory, unlocked for writing, and its storage.
    func create(_ name: String = "memory.state") throws -> (GuestStateContainer, MemoryStorage) {
        let storage = MemoryStorage(name: name)
        return (try GuestStateContainer.create(in: storage, vm: vm, vault: vault), storage)
    }
}

/// Appends a commit record to `bytes` at `offset` and returns the new bytes.
func appending(_ record: [UInt8], to bytes: [UInt8], at offset: Int64) -> [UInt8] {
    var out = Array(bytes.prefix(Int(offset)))
    out += record
    return out + [UInt8](repeating: 0, count: 4096)
}

@Suite struct MemoryContainerTests {
    @Test func writeCommitRotateAndReopenInMemory() throws {
        let f = try MemoryFixture()
        let (container, storage) = try f.create()
        try container.write("tpm.permanent", Array(repeating: 7, count: 3000))
        try container.writeStream("vm.runtime", from: pattern(total: 600_000))
        #expect(try container.commit() == 2)
        #expect(try container.rotateDEK() == 3)

        let reopened = try GuestStateContainer.open(bytes: storage.bytes, name: "copy")
        #expect(reopened.generation == 3)
        #expect(reopened.info.logBytes == reopened.info.liveBytes, "the rewrite holds only live records")
        try reopened.unlock(with: UnlockCredentials(vault: f.vault))
        #expect(try reopened.read("tpm.permanent") == Array(repeating: 7, count: 3000))
        #expect(try reopened.read("vm.runtime") == collect(pattern(total: 600_000)))
    }

    /// `guestvault inspect --json` keys and values: the typed id still encodes as the
    /// 32 hex digits of the container id.
    @Test func infoJSONKeepsItsKeysAndTheHexID() throws {
        let f = try MemoryFixture()
        let (container, _) = try f.create()
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(container.info)) as? [String: Any]
        #expect(Set(json?.keys.map { $0 } ?? []) == ["path", "vm", "containerID", "generation", "created", "committed", "entries",
                                                       "slots", "fileSize", "logBytes", "liveBytes"])
        #expect(json?["containerID"] as? String == hexString(container.containerID))
        #expect(container.info.containerID.bytes == container.containerID)
        let decoded = try JSONDecoder().decode(ContainerInfo.self, from: JSONEncoder().encode(container.info))
        #expect(decoded == container.info)
    }

    // MARK: Issue 13.9: no trap on a generation from the file

    /// A file whose commits are at generation 2^64 - 1 and then 1 (each record check
    /// valid, no keys needed): inspecting it used to trap computing 2^64 - 1 + 1.
    @Test func commitsAtTheLastGenerationThenOneOpenWithoutATrap() throws {
        let f = try MemoryFixture()
        let (made, storage) = try f.create()
        let keys = try #require(made.keys)
        let superblock = made.scan.superblockBytes
        let last = try CommitRecord(generation: .max, previous: 0, slots: made.slots, entries: [], keys: keys, superblockBytes: superblock)
        let first = try CommitRecord(generation: 1, previous: ContainerFormat.logStart, slots: made.slots, entries: [], keys: keys,
                                     superblockBytes: superblock)
        let bytes = appending(last.bytes + first.bytes, to: storage.bytes, at: ContainerFormat.logStart)

        let opened = try GuestStateContainer.open(bytes: bytes)
        #expect(opened.generation == .max, "the commit at 1 does not continue the chain: the log ends before it")
        #expect(opened.info.generation == .max)

        // With keys: the container opens, and no further commit is possible (a typed
        // error, never a trap), for entries, streams and slots alike.
        let writable = try GuestStateContainer.open(storage: MemoryStorage(bytes), path: "crafted", access: .readWrite)
        try writable.unlock(withKey: keys.dek, vault: nil)
        try writable.write("tpm.permanent", [1, 2, 3])
        let commit = try #require(throws: ContainerError.self) { try writable.commit() }
        #expect(commit.code == .limit && commit.category == .limit, "\(commit)")
        #expect(ErrorChain.find(.malformed, in: commit) != nil, "the checked-arithmetic overflow stays underneath")
        writable.discardPendingChanges()
        let stream = try #require(throws: ContainerError.self) { try writable.writeStream("vm.runtime", from: pattern(total: 10)) }
        #expect(stream.code == .limit)
        let rekey = try #require(throws: ContainerError.self) {
            try writable.addSlot { try .wrapForPassphrase($0, passphrase: SecretBytes(copying: Array("pw".utf8)), parameters: .init(n: 1 << 10, r: 8, p: 1)) }
        }
        #expect(rekey.code == .limit)
    }

    // MARK: Issue 13.13: entry names

    @Test(arguments: [
        "k\u{FFFD}",          // what k\xff and k\xfe both become in a Swift string
        "a\u{200B}b",         // zero-width space (format)
        "\u{FEFF}bom",        // byte order mark (format)
        "e\u{301}",           // not NFC (é decomposed)
        "x\u{2028}y",         // line separator
        "x\u{85}y",           // C1 control
        "p\u{E000}",          // private use
        "", " lead", "trail ", "tab\there", "a\u{0}b", String(repeating: "x", count: 256),
    ])
    func namesAWriterRefuses(_ name: String) throws {
        let f = try MemoryFixture()
        let (container, _) = try f.create()
        let error = try #require(throws: ContainerError.self) { try container.write(name, [1]) }
        #expect(error.code == .invalidName && error.category == .usage)
    }

    @Test func namesAreComparedAndSortedByTheirBytes() throws {
        let f = try MemoryFixture()
        let (container, storage) = try f.create()
        for name in ["b", "é", "a", "B", "z z", "日本", String(repeating: "x", count: 255)] {
            try container.write(name, Array(name.utf8))
        }
        try container.commit()
        let expected = ["B", "a", "b", String(repeating: "x", count: 255), "z z", "é", "日本"]
        #expect(container.entryNames == expected)
        let reopened = try GuestStateContainer.open(bytes: storage.bytes)
        #expect(reopened.entryNames == expected)
        try reopened.unlock(with: UnlockCredentials(vault: f.vault))
        #expect(try reopened.read("é") == Array("é".utf8))
        // The decomposed spelling is another byte string: not this entry.
        #expect(throws: ContainerError.self) { try reopened.read("e\u{301}") }
    }

    /// A commit whose entries are not in byte order (or repeat a name) is malformed: a
    /// reader checks the order, so one name can never mean two entries.
    @Test func aCommitWithNamesOutOfOrderIsMalformed() throws {
        let f = try MemoryFixture()
        let (container, storage) = try f.create()
        try container.write("a", [1])
        try container.write("b", [2])
        try container.commit()
        let keys = try #require(container.keys)
        for entries in [Array(container.scan.manifest.entries.reversed()),
                        [container.scan.manifest.entries[0], container.scan.manifest.entries[0]]] {
            let swapped = try CommitRecord(generation: container.generation + 1, previous: container.scan.commitOffset, slots: container.slots,
                                           entries: entries, keys: keys, superblockBytes: container.scan.superblockBytes)
            let bytes = appending(swapped.bytes, to: storage.bytes, at: container.logEnd)
            let error = try #require(throws: ContainerError.self) { try GuestStateContainer.open(bytes: bytes) }
            #expect(error.code == .malformed, "\(error)")
            #expect(ErrorChain.find(.malformed, in: error) is ByteCodecError || error.underlying is ByteCodecError, "\(error)")
        }
    }

    /// An older writer could store "e" + U+0301 and "é" as two entries (they differ as
    /// bytes). A reader keeps them apart, and a commit must not merge or trap on them.
    @Test func canonicallyEquivalentLegacyNamesStayTwoEntries() throws {
        let f = try MemoryFixture()
        let (container, storage) = try f.create()
        try container.write("é", [1])
        try container.commit()
        let keys = try #require(container.keys)
        var decomposed = try container.committedEntry("é")
        decomposed.name = "e\u{301}"
        let entries = [decomposed, try container.committedEntry("é")]
        let legacy = try CommitRecord(generation: container.generation + 1, previous: container.scan.commitOffset, slots: container.slots,
                                      entries: entries, keys: keys, superblockBytes: container.scan.superblockBytes)
        let writable = try GuestStateContainer.open(storage: MemoryStorage(appending(legacy.bytes, to: storage.bytes, at: container.logEnd)),
                                                    path: "legacy", access: .readWrite)
        #expect(writable.entryNames.map { Array($0.utf8) } == [Array("e\u{301}".utf8), Array("é".utf8)])
        try writable.unlock(withKey: keys.dek, vault: nil)
        try writable.write("z", [2])
        #expect(try writable.commit() == 4)
        #expect(writable.entryNames.count == 3)
        #expect(try writable.read("é") == [1])
    }

    @Test func theNilUUIDIsNotAVM() throws {
        let f = try MemoryFixture()
        let error = try #require(throws: ContainerError.self) {
            try GuestStateContainer.create(at: f.dir.file("nil.state"), vm: UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)), vault: f.vault)
        }
        #expect(error.code == .invalidName)
        #expect(!FileManager.default.fileExists(atPath: f.dir.file("nil.state")))
    }

    // MARK: Issue 17: records after the last commit

    /// A stream record after the last commit whose record check is valid but whose
    /// stream header is not (chunk size 1) is an append that never committed: ignored
    /// by a reader, cleared by the next writer (docs/FORMAT.md §6). It used to be a
    /// hard error that made the container unreadable.
    @Test func anUncommittedStreamWithABadHeaderIsIgnored() throws {
        let f = try MemoryFixture()
        let (container, storage) = try f.create()
        try container.write("tpm.permanent", [1, 2, 3])
        try container.commit()
        var header = ByteWriter()
        header.raw([UInt8](repeating: 9, count: 16))
        header.u32(1)             // chunk size 1: out of range
        header.u32(0)
        header.u64(100)
        header.u64(100)
        header.raw(Array(try SHA256.hash(header.bytes).prefix(8)))
        let body = header.bytes + [UInt8](repeating: 0xAB, count: 100 + 16 * 100)
        let record = try RecordHeader.make(kind: .stream, bodyLength: UInt64(body.count), checkedBody: header.bytes).encoded() + body
        let bytes = appending(record, to: storage.bytes, at: container.logEnd)

        let opened = try GuestStateContainer.open(bytes: bytes)
        #expect(opened.generation == 2 && opened.logEnd == container.logEnd)
        let tailStorage = MemoryStorage(bytes)
        let writer = try GuestStateContainer.open(storage: tailStorage, path: "tail", access: .readWrite)
        #expect(try tailStorage.firstNonZeroByte(at: writer.logEnd, count: Int64(tailStorage.bytes.count) - writer.logEnd) == nil,
                "the next writer cleared the unfinished append")
        try writer.unlock(with: UnlockCredentials(vault: f.vault))
        try writer.write("tpm.permanent", [4])
        #expect(try writer.commit() == 3)
    }

    /// The same bad header in a stream a commit names is an error, not the end of the log.
    @Test func aCommittedStreamWithABadHeaderIsMalformed() throws {
        let f = try MemoryFixture()
        let (container, storage) = try f.create()
        try container.writeStream("vm.runtime", from: pattern(total: 5000))
        try container.commit()
        let entry = try container.committedEntry("vm.runtime")
        var bytes = storage.bytes
        let at = Int(entry.recordOffset) + RecordHeader.count
        bytes.replaceSubrange((at + 16)..<(at + 20), with: UInt32(1).bigEndianBytes)
        bytes.replaceSubrange((at + 40)..<(at + 48), with: try SHA256.hash(Array(bytes[at..<(at + 40)])).prefix(8))
        let length = try #require(UInt64(bigEndianBytes: bytes[(at - 24)..<(at - 16)]))
        let check = try RecordHeader.make(kind: .stream, bodyLength: length, checkedBody: Array(bytes[at..<(at + 48)])).check
        bytes.replaceSubrange((at - 16)..<at, with: check)
        let error = try #require(throws: ContainerError.self) { try GuestStateContainer.open(bytes: bytes) }
        #expect(error.code == .malformed, "\(error)")
    }
}
