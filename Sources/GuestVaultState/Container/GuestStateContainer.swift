public import Foundation
public import GuestVaultCrypto
public import GuestVaultKeys
import GuestVaultSystem

/// A VM's guest state container file: named entries sealed under the container's DEK,
/// its key protector slots, and a generation that each commit increments.
///
/// Open it without keys to inspect it (``info``); ``unlock(with:allowRollback:)`` to read
/// and write entries. Writes are staged and become visible, atomically and durably, with
/// ``commit()``. Only one process may open a container for writing (a lock file names
/// the holder). The format is in docs/FORMAT.md.
public final class GuestStateContainer {
    public enum Access: Sendable { case readOnly, readWrite }

    public let path: String
    public let access: Access
    private var file: OpenFile
    private let lock: ContainerLock?
    private var scan: LogScan
    private var keys: EntryKeys?
    private var vault: KeyVault?
    /// The slot that opened the key, once unlocked.
    public private(set) var unlockedSlot: Int?
    private var pending: [String: Pending] = [:]
    private var pendingOrder: [String] = []
    /// Where the next record goes (after any staged streams).
    private var appendPoint: Int64

    enum Pending {
        case blob([UInt8])
        case stream(offset: Int64, header: StreamHeader, digest: [UInt8])
        case removed
    }

    /// Bytes preallocated (written as zeros) ahead of the log, so that a commit is an
    /// overwrite and its fdatasync need not update the file's size.
    static let preallocationStep: Int64 = 1 << 20
    /// Compaction starts when this many bytes of the log are no longer named by the
    /// last commit, and they are more than half the log.
    static let compactionThreshold: Int64 = 8 << 20

    deinit {
        try? vault?.counters.flush()
    }

    /// Waits until the vault's rollback counter for this VM is on disk too (commits
    /// record it in the background).
    public func flush() throws {
        try vault?.counters.flush()
    }

    // MARK: Opening

    private init(path: String, access: Access, file: OpenFile, lock: ContainerLock?, scan: LogScan) {
        self.path = path
        self.access = access
        self.file = file
        self.lock = lock
        self.scan = scan
        self.appendPoint = scan.logEnd
    }

    /// Opens an existing container. `.readWrite` takes the writer lock.
    public static func open(at path: String, access: Access = .readOnly) throws -> GuestStateContainer {
        let lock = access == .readWrite ? try ContainerLock(containerPath: path) : nil
        if lock != nil { removeUnfinishedRewrites(of: path) }
        let file: OpenFile
        do {
            file = try OpenFile(path: path, mode: access == .readWrite ? .readWrite : .readOnly)
        } catch let error as SystemError where error.isNotFound {
            throw ContainerError(.io, subject: path, reason: "no such container file")
        } catch {
            throw ContainerError(.io, subject: path, reason: "\(error)")
        }
        let scan = try LogScan.scan(file)
        let container = GuestStateContainer(path: path, access: access, file: file, lock: lock, scan: scan)
        if access == .readWrite && scan.hasTail {
            try container.clearTail()
        }
        return container
    }

    /// Removes `STATE.compact-PID` files that a writer killed during compaction or DEK
    /// rotation left behind (the rename never happened, so the container is whole
    /// without them). Only the holder of the writer lock makes such files, and the
    /// caller holds it now.
    private static func removeUnfinishedRewrites(of path: String) {
        let directory = FileSystem.parentDirectory(of: path)
        let prefix = (path as NSString).lastPathComponent + ".compact-"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where name.hasPrefix(prefix) {
            let pid = name.dropFirst(prefix.count)
            guard !pid.isEmpty, pid.allSatisfy(\.isASCII), pid.allSatisfy(\.isNumber) else { continue }
            try? FileSystem.removeFile(FileSystem.join(directory, name))
        }
    }

    /// Creates a new container for `vm` at `path` (which must not exist), with a random
    /// DEK wrapped in a vault slot (KEK epoch `epoch`) and any `extraSlots` makers, and
    /// opens it unlocked for writing at generation 1. The file appears complete or not
    /// at all.
    public static func create(
        at path: String, vm: UUID, vault: KeyVault, epoch: UInt32 = 1,
        extraSlots: [(SecretBytes) throws -> KeyProtector] = []
    ) throws -> GuestStateContainer {
        if FileSystem.exists(path) {
            throw ContainerError(.alreadyExists, subject: path, reason: "a file already exists here; nothing was changed")
        }
        let dek = try SecretBytes(randomCount: 32)
        var slots = try KeyProtectorSet([.wrapForVault(dek, vault: vault, vm: vm, epoch: epoch)])
        for make in extraSlots { try slots.add(make(dek)) }
        let superblock = Superblock(containerID: try SecureRandom.bytes(count: 16), vm: vm,
                                    created: UInt64(Date().timeIntervalSince1970))
        let keys = try EntryKeys(dek: dek, containerID: superblock.containerID)
        let header = try superblock.encoded()
        var bytes = header + [UInt8](repeating: 0, count: Int(ContainerFormat.logStart) - header.count)
        bytes += try commitRecord(generation: 1, previous: 0, slots: slots, entries: [], keys: keys, superblockBytes: header)
        bytes += [UInt8](repeating: 0, count: Int(preallocationStep))
        try writeNewFile(bytes, at: path)
        let container = try open(at: path, access: .readWrite)
        container.keys = keys
        container.vault = vault
        container.unlockedSlot = 0
        try vault.counters.record(vm: vm, container: superblock.containerID, generation: 1)
        return container
    }

    /// Writes a complete new file next to `path`, syncs it, and links it into place
    /// without replacing anything that appeared meanwhile.
    private static func writeNewFile(_ bytes: [UInt8], at path: String) throws {
        let temporary = "\(path).new-\(ProcessInfo.processInfo.processIdentifier)"
        do {
            try? FileSystem.removeFile(temporary)
            let file = try OpenFile(creating: temporary)
            try file.write(bytes, at: 0)
            try file.sync()
            do {
                try FileSystem.link(temporary, to: path)
            } catch let error as SystemError {
                try? FileSystem.removeFile(temporary)
                if error.errno == EEXIST {
                    throw ContainerError(.alreadyExists, subject: path, reason: "a file appeared here meanwhile; nothing was changed")
                }
                throw error
            }
            try FileSystem.removeFile(temporary)
            try FileSystem.syncDirectory(FileSystem.parentDirectory(of: path))
        } catch let error as ContainerError {
            throw error
        } catch {
            try? FileSystem.removeFile(temporary)
            throw ContainerError(.io, subject: path, reason: "could not create the container: \(error)")
        }
    }

    // MARK: Keys

    /// Opens the DEK with the first slot the credentials open, checks the metadata's
    /// authenticator, and (with a vault) refuses a generation older than the vault has
    /// seen for this VM unless `allowRollback`. Returns the slot that opened.
    @discardableResult
    public func unlock(with credentials: UnlockCredentials, allowRollback: Bool = false) throws -> Int {
        let (dek, slot) = try scan.manifest.slots.unwrap(vm: scan.superblock.vm, with: credentials)
        let keys = try EntryKeys(dek: dek, containerID: scan.superblock.containerID)
        let expected = try Self.authenticator(manifest: scan.manifest, keys: keys, superblockBytes: scan.superblockBytes,
                                              headerPrefix: scan.commitHeaderPrefix)
        guard constantTimeEquals(expected, scan.manifest.auth) else {
            throw ContainerError(.authenticationFailed, subject: path,
                                 reason: "the metadata of generation \(scan.manifest.generation) does not authenticate: the file was changed")
        }
        if let vault = credentials.vault {
            switch try vault.counters.check(vm: scan.superblock.vm, container: scan.superblock.containerID, generation: scan.manifest.generation) {
            case .rollback(let latest) where !allowRollback:
                throw ContainerError(.rollback, subject: path,
                                     reason: "generation \(scan.manifest.generation) is older than generation \(latest), which vault \(vault.path) has seen for VM \(scan.superblock.vm.uuidString.lowercased()): an older copy was put back")
            case .rollback:
                break
            case .unknown, .current:
                try vault.counters.record(vm: scan.superblock.vm, container: scan.superblock.containerID, generation: scan.manifest.generation)
            }
            self.vault = vault
        }
        self.keys = keys
        unlockedSlot = slot
        return slot
    }

    /// Unlocks with the DEK itself (handed over by an authenticated transfer), checking
    /// the metadata's authenticator. Returns nothing to say which slot: none was used.
    public func unlock(withKey dek: SecretBytes, vault: KeyVault?, allowRollback: Bool = false) throws {
        let keys = try EntryKeys(dek: dek, containerID: scan.superblock.containerID)
        let expected = try Self.authenticator(manifest: scan.manifest, keys: keys, superblockBytes: scan.superblockBytes,
                                              headerPrefix: scan.commitHeaderPrefix)
        guard constantTimeEquals(expected, scan.manifest.auth) else {
            throw ContainerError(.authenticationFailed, subject: path, reason: "the key does not authenticate this container's metadata")
        }
        if let vault {
            if case .rollback(let latest) = try vault.counters.check(vm: vm, container: containerID, generation: generation), !allowRollback {
                throw ContainerError(.rollback, subject: path, reason: "generation \(generation) is older than generation \(latest), which vault \(vault.path) has seen for this VM")
            }
            try vault.counters.record(vm: vm, container: containerID, generation: generation)
            self.vault = vault
        }
        self.keys = keys
    }

    /// The container's DEK, for handing over inside an authenticated, encrypted
    /// transfer. Needs the container unlocked.
    public func protectionKey() throws -> SecretBytes { try unlockedKeys().dek }

    /// Where the last commit ends: the bytes [0, logEnd) are a complete container and
    /// never change while the file stays (appends go after them; rewrites use a new file).
    public var logEnd: Int64 { scan.logEnd }

    /// Reads raw file bytes into `buffer` at `bufferOffset`, returning how many were read.
    public func readRaw(into buffer: inout [UInt8], bufferOffset: Int, at offset: Int64, count: Int) throws -> Int {
        try file.read(into: &buffer, bufferOffset: bufferOffset, at: offset, count: count)
    }

    /// Reads raw file bytes (for transfers of the sealed file).
    public func rawBytes(at offset: Int64, count: Int) throws -> [UInt8] {
        try LogScan.read(file, offset, count)
    }

    // MARK: Reading

    /// What can be read without keys.
    public var info: ContainerInfo {
        ContainerInfo(
            path: path, vm: scan.superblock.vm, containerID: hexString(scan.superblock.containerID),
            generation: scan.manifest.generation, created: scan.superblock.created, committed: scan.manifest.timestamp,
            entries: scan.manifest.entries.map {
                EntryInfo(name: $0.name, kind: $0.kind == .blob ? "blob" : "stream", size: $0.size, sealedGeneration: $0.sealedGeneration)
            },
            slots: scan.manifest.slots.slots.enumerated().map { SlotInfo(index: $0.offset, kind: "\($0.element.kind)", detail: $0.element.summary) },
            fileSize: scan.fileSize, logBytes: scan.logEnd - ContainerFormat.logStart, liveBytes: scan.liveBytes)
    }

    public var vm: UUID { scan.superblock.vm }
    /// The container's random 16-byte id (typed; `info.containerID` is its hex form for people).
    public var containerID: [UInt8] { scan.superblock.containerID }
    public var generation: UInt64 { scan.manifest.generation }
    public var slots: KeyProtectorSet { scan.manifest.slots }
    public var entryNames: [String] { scan.manifest.entries.map(\.name) }

    /// Reads a committed entry. Streams larger than the blob limit must be read with
    /// ``readStream(_:to:)``.
    public func read(_ name: String) throws -> [UInt8] {
        let keys = try unlockedKeys()
        let entry = try committedEntry(name)
        switch entry.kind {
        case .blob:
            let body = try LogScan.read(file, entry.recordOffset + Int64(RecordHeader.count), Int(entry.size) + 16)
            guard body.count == Int(entry.size) + 16 else {
                throw ContainerError(.truncated, subject: "\(path) entry \(name)", reason: "the sealed entry is cut short")
            }
            return try SealedBlob.open(body, keys: keys, salt: entry.salt, binding: binding(entry), expectedTag: entry.digest)
        case .stream:
            guard entry.size <= UInt64(ContainerFormat.maximumBlobSize) else {
                throw ContainerError(.limit, subject: "\(path) entry \(name)", reason: "the entry is \(entry.size) bytes; read it as a stream")
            }
            var out: [UInt8] = []
            try readStream(name) { out.append(contentsOf: $0) }
            return out
        }
    }

    /// Reads a committed entry in pieces (constant memory); `sink` gets each verified
    /// chunk in order. A failure part-way means the data so far must be discarded.
    public func readStream(_ name: String, to sink: ([UInt8]) throws -> Void) throws {
        let keys = try unlockedKeys()
        let entry = try committedEntry(name)
        switch entry.kind {
        case .blob:
            try sink(read(name))
        case .stream:
            let headerOffset = entry.recordOffset + Int64(RecordHeader.count)
            let header = try StreamHeader.parse(LogScan.read(file, headerOffset, StreamHeader.count), subject: "\(path) entry \(name)")
            guard header.salt == entry.salt, header.length == entry.size else {
                throw ContainerError(.authenticationFailed, subject: "\(path) entry \(name)", reason: "the stream record is not the one the commit names")
            }
            try SealedStream.open(file: file, headerOffset: headerOffset, header: header, keys: keys, binding: binding(entry),
                                  expectedDigest: entry.digest, sink: sink)
        }
    }

    /// Reads one chunk of a stream entry on its own (random access).
    public func readChunk(_ name: String, index: UInt64) throws -> [UInt8] {
        let keys = try unlockedKeys()
        let entry = try committedEntry(name)
        guard entry.kind == .stream else {
            throw ContainerError(.invalidName, subject: "\(path) entry \(name)", reason: "not a stream entry")
        }
        let headerOffset = entry.recordOffset + Int64(RecordHeader.count)
        let header = try StreamHeader.parse(LogScan.read(file, headerOffset, StreamHeader.count), subject: "\(path) entry \(name)")
        guard index < header.chunkCount, header.salt == entry.salt else {
            throw ContainerError(.limit, subject: "\(path) entry \(name)", reason: "there is no chunk \(index) (\(header.chunkCount) chunks)")
        }
        let plain = SealedStream.chunkPlainCount(header: header, index: index)
        let raw = try LogScan.read(file, SealedStream.chunkOffset(headerOffset: headerOffset, chunkSize: Int(header.chunkSize), index: index),
                                   plain + AESGCM.tagByteCount)
        return try SealedStream.openChunk(raw, index: index, last: index == header.chunkCount - 1,
                                          key: keys.entryKey(salt: header.salt), binding: binding(entry))
    }

    // MARK: Writing (staged until commit)

    /// Stages `bytes` as entry `name` (replacing any), up to 64 MiB.
    public func write(_ name: String, _ bytes: [UInt8]) throws {
        try checkWritable(name)
        guard bytes.count <= ContainerFormat.maximumBlobSize else {
            throw ContainerError(.limit, subject: "\(path) entry \(name)",
                                 reason: "\(bytes.count) bytes is more than a blob holds (\(ContainerFormat.maximumBlobSize)); write it as a stream")
        }
        stage(name, .blob(bytes))
    }

    /// Seals everything `source` yields as stream entry `name`, in chunks sealed in
    /// parallel with constant memory. The data goes to the file now; it becomes the
    /// entry with the next commit.
    public func writeStream(
        _ name: String, from source: (inout [UInt8]) throws -> Int, progress: ((UInt64) -> Void)? = nil
    ) throws {
        try checkWritable(name)
        let keys = try unlockedKeys()
        let recordOffset = appendPoint
        let headerOffset = recordOffset + Int64(RecordHeader.count)
        let binding = EntryBinding(vm: vm, containerID: scan.superblock.containerID, name: name, generation: generation + 1)
        let (header, digest) = try SealedStream.seal(from: source, into: file, at: headerOffset + Int64(StreamHeader.count),
                                                     keys: keys, binding: binding, progress: progress)
        let headerBytes = try header.encoded()
        let record = try RecordHeader.make(kind: .stream, bodyLength: UInt64(StreamHeader.count) + header.sealedLength, checkedBody: headerBytes)
        try file.write(record.encoded() + headerBytes, at: recordOffset)
        appendPoint = headerOffset + Int64(StreamHeader.count) + Int64(header.sealedLength)
        stage(name, .stream(offset: recordOffset, header: header, digest: digest))
    }

    /// Stages the removal of entry `name`.
    public func remove(_ name: String) throws {
        try checkWritable(name)
        guard pending[name] != nil || scan.manifest.entries.contains(where: { $0.name == name }) else {
            throw ContainerError(.noSuchEntry, subject: "\(path) entry \(name)", reason: "no such entry")
        }
        stage(name, .removed)
    }

    /// Whether there are staged changes.
    public var hasPendingChanges: Bool { !pending.isEmpty }

    /// Makes every staged change visible at once, as generation + 1, durably: when this
    /// returns the new generation survives a crash. Returns the new generation.
    ///
    /// Blob-only commits cost one write and one fdatasync (plus the vault counter's).
    /// Commits with streams fdatasync the stream data first.
    @discardableResult
    public func commit() throws -> UInt64 {
        let keys = try unlockedKeys()
        guard access == .readWrite else { throw ContainerError(.readOnly, subject: path, reason: "opened read-only") }
        let next = generation + 1
        var entries = Dictionary(uniqueKeysWithValues: scan.manifest.entries.map { ($0.name, $0) })
        var buffer: [UInt8] = []
        var cursor = appendPoint
        var hasStreams = false
        for name in pendingOrder {
            switch pending[name]! {
            case .removed:
                entries[name] = nil
            case .stream(let offset, let header, let digest):
                hasStreams = true
                entries[name] = EntryRecord(name: name, kind: .stream, sealedGeneration: next, size: header.length,
                                            recordOffset: offset, salt: header.salt, digest: digest)
            case .blob(let plaintext):
                let salt = try SecureRandom.bytes(count: 16)
                let binding = EntryBinding(vm: vm, containerID: scan.superblock.containerID, name: name, generation: next)
                let (body, tag) = try SealedBlob.seal(plaintext, keys: keys, salt: salt, binding: binding)
                let record = try RecordHeader.make(kind: .blob, bodyLength: UInt64(body.count), checkedBody: body)
                entries[name] = EntryRecord(name: name, kind: .blob, sealedGeneration: next, size: UInt64(plaintext.count),
                                            recordOffset: cursor, salt: salt, digest: tag)
                buffer += record.encoded()
                buffer += body
                cursor += Int64(RecordHeader.count + body.count)
            }
        }
        guard entries.count <= ContainerFormat.maximumEntries else {
            throw ContainerError(.limit, subject: path, reason: "more than \(ContainerFormat.maximumEntries) entries")
        }
        let sorted = entries.values.sorted { $0.name < $1.name }
        let commitOffset = cursor
        let commit = try Self.makeCommit(generation: next, previous: scan.commitOffset, slots: scan.manifest.slots, entries: sorted,
                                         keys: keys, superblockBytes: scan.superblockBytes)
        buffer += commit.bytes
        try durablyAppend(buffer, at: appendPoint, syncFirst: hasStreams)
        applyCommit(commit.manifest, prefix: commit.prefix, at: commitOffset, recordLength: commit.bytes.count)
        pending = [:]
        pendingOrder = []
        // The commit is durable; the counter follows it to disk in the background.
        if let vault { try vault.counters.record(vm: vm, container: containerID, generation: scan.manifest.generation, durability: .deferred) }
        try compactIfWorthIt()
        return scan.manifest.generation
    }

    /// Drops every staged change. Stream data already written is left as unused bytes
    /// after the log and cleared by the next commit.
    public func discardPendingChanges() {
        pending = [:]
        pendingOrder = []
        appendPoint = scan.logEnd
    }

    // MARK: Keys and slots

    /// Re-wraps the vault slots under the VM's KEK at `epoch` (KEK rotation) and commits.
    /// The sealed entries are not touched.
    @discardableResult
    public func rotateKEK(to epoch: UInt32) throws -> UInt64 {
        let keys = try unlockedKeys()
        guard let vault else { throw ContainerError(.notUnlocked, subject: path, reason: "KEK rotation needs the container unlocked with its vault") }
        var slots = scan.manifest.slots
        let count = try slots.rewrapVaultSlots(key: keys.dek, vault: vault, vm: vm, newEpoch: epoch)
        guard count > 0 else { throw ContainerError(.notUnlocked, subject: path, reason: "no slot belongs to vault \(vault.path)") }
        return try commitSlots(slots)
    }

    /// Adds a key protector slot made from the DEK and commits.
    @discardableResult
    public func addSlot(_ make: (SecretBytes) throws -> KeyProtector) throws -> UInt64 {
        let keys = try unlockedKeys()
        var slots = scan.manifest.slots
        try slots.add(make(keys.dek))
        return try commitSlots(slots)
    }

    /// Removes slot `index` and commits (never the last slot).
    @discardableResult
    public func removeSlot(at index: Int) throws -> UInt64 {
        _ = try unlockedKeys()
        var slots = scan.manifest.slots
        try slots.remove(at: index)
        return try commitSlots(slots)
    }

    /// Replaces the DEK: every entry is re-encrypted under a new random DEK into a new
    /// file that replaces this one atomically. Vault and recipient slots are re-made for
    /// the new key; passphrase slots are re-made only if `passphrase` is given, otherwise
    /// dropped. Returns the new generation.
    @discardableResult
    public func rotateDEK(passphrase: SecretBytes? = nil) throws -> UInt64 {
        let old = try unlockedKeys()
        guard let vault else { throw ContainerError(.notUnlocked, subject: path, reason: "DEK rotation needs the container unlocked with its vault") }
        guard pending.isEmpty else { throw ContainerError(.readOnly, subject: path, reason: "commit or discard staged changes first") }
        let dek = try SecretBytes(randomCount: 32)
        var newSlots: [KeyProtector] = []
        for slot in scan.manifest.slots.slots {
            switch slot {
            case .vault(let id, let epoch, _) where id == vault.rootKeyID:
                newSlots.append(try .wrapForVault(dek, vault: vault, vm: vm, epoch: epoch))
            case .vault:
                break
            case .recipient(let recipient, _, _):
                newSlots.append(try .wrapForRecipient(dek, recipient: X25519.PublicKey(rawRepresentation: recipient), vm: vm))
            case .passphrase(let log2N, let r, let p, _, _):
                if let passphrase {
                    newSlots.append(try .wrapForPassphrase(dek, passphrase: passphrase,
                                                           parameters: .init(n: 1 << UInt64(log2N), r: UInt32(r), p: UInt32(p))))
                }
            }
        }
        let keys = try EntryKeys(dek: dek, containerID: scan.superblock.containerID)
        try rewrite(slots: KeyProtectorSet(newSlots), newKeys: keys, oldKeys: old)
        return generation
    }

    // MARK: Internals

    private func commitSlots(_ slots: KeyProtectorSet) throws -> UInt64 {
        let keys = try unlockedKeys()
        guard access == .readWrite else { throw ContainerError(.readOnly, subject: path, reason: "opened read-only") }
        guard pending.isEmpty else { throw ContainerError(.readOnly, subject: path, reason: "commit or discard staged changes first") }
        let commitOffset = appendPoint
        let commit = try Self.makeCommit(generation: generation + 1, previous: scan.commitOffset, slots: slots,
                                         entries: scan.manifest.entries, keys: keys, superblockBytes: scan.superblockBytes)
        try durablyAppend(commit.bytes, at: appendPoint, syncFirst: false)
        applyCommit(commit.manifest, prefix: commit.prefix, at: commitOffset, recordLength: commit.bytes.count)
        if let vault { try vault.counters.record(vm: vm, container: containerID, generation: generation) }
        return generation
    }

    private func stage(_ name: String, _ change: Pending) {
        if pending[name] == nil { pendingOrder.append(name) }
        pending[name] = change
    }

    private func checkWritable(_ name: String) throws {
        guard access == .readWrite else { throw ContainerError(.readOnly, subject: path, reason: "opened read-only; nothing can be written") }
        guard EntryName.isValid(name) else {
            throw ContainerError(.invalidName, subject: path, reason: "\"\(name)\" is not a valid entry name (1 to 255 bytes of UTF-8, no control characters, no leading or trailing spaces)")
        }
        _ = try unlockedKeys()
    }

    private func unlockedKeys() throws -> EntryKeys {
        guard let keys else {
            throw ContainerError(.notUnlocked, subject: path, reason: "the container is locked; unlock it with its vault, a recipient key or a passphrase")
        }
        return keys
    }

    private func committedEntry(_ name: String) throws -> EntryRecord {
        guard let entry = scan.manifest.entries.first(where: { $0.name == name }) else {
            throw ContainerError(.noSuchEntry, subject: "\(path) entry \(name)",
                                 reason: "no such entry (entries: \(entryNames.isEmpty ? "none" : entryNames.joined(separator: ", ")))")
        }
        return entry
    }

    private func binding(_ entry: EntryRecord) -> EntryBinding {
        EntryBinding(vm: vm, containerID: scan.superblock.containerID, name: entry.name, generation: entry.sealedGeneration)
    }

    /// One commit record (header and body), authenticated.
    static func commitRecord(
        generation: UInt64, previous: Int64, slots: KeyProtectorSet, entries: [EntryRecord], keys: EntryKeys, superblockBytes: [UInt8]
    ) throws -> [UInt8] {
        try makeCommit(generation: generation, previous: previous, slots: slots, entries: entries, keys: keys,
                       superblockBytes: superblockBytes).bytes
    }

    static func makeCommit(
        generation: UInt64, previous: Int64, slots: KeyProtectorSet, entries: [EntryRecord], keys: EntryKeys, superblockBytes: [UInt8]
    ) throws -> (bytes: [UInt8], manifest: Manifest, prefix: [UInt8]) {
        var manifest = Manifest(generation: generation, timestamp: UInt64(Date().timeIntervalSince1970), previousCommit: previous,
                                slots: slots, entries: entries, auth: [])
        let unauthenticated = manifest.unauthenticatedBody()
        let prefix = RecordHeader.prefix(kind: .commit, bodyLength: UInt64(unauthenticated.count + Manifest.authCount))
        manifest.auth = try authenticator(unauthenticatedBody: unauthenticated, keys: keys, superblockBytes: superblockBytes, headerPrefix: prefix)
        let body = unauthenticated + manifest.auth
        return (try RecordHeader.make(kind: .commit, bodyLength: UInt64(body.count), checkedBody: body).encoded() + body, manifest, prefix)
    }

    /// HMAC-SHA256(manifest key, superblock (64) || record header bytes 0..<16 || body
    /// without the authenticator).
    static func authenticator(manifest: Manifest, keys: EntryKeys, superblockBytes: [UInt8], headerPrefix: [UInt8]) throws -> [UInt8] {
        try authenticator(unauthenticatedBody: manifest.unauthenticatedBody(), keys: keys, superblockBytes: superblockBytes, headerPrefix: headerPrefix)
    }

    static func authenticator(unauthenticatedBody: [UInt8], keys: EntryKeys, superblockBytes: [UInt8], headerPrefix: [UInt8]) throws -> [UInt8] {
        var mac = try HMACSHA256(key: keys.manifestKey)
        try mac.update(superblockBytes)
        try mac.update(headerPrefix)
        try mac.update(unauthenticatedBody)
        return try mac.finalize()
    }

    /// Writes `bytes` at `offset` (extending the preallocated zero region first if
    /// needed) and fdatasyncs. With `syncFirst`, earlier writes (stream data) are made
    /// durable before the commit is written, so a commit never names data that could
    /// be lost.
    private func durablyAppend(_ bytes: [UInt8], at offset: Int64, syncFirst: Bool) throws {
        do {
            let needed = offset + Int64(bytes.count) + Int64(RecordHeader.count)
            var size = try file.size()
            if needed > size {
                let target = needed + Self.preallocationStep
                try file.write([UInt8](repeating: 0, count: Int(target - size)), at: size)
                try file.sync()
                size = target
            } else if syncFirst {
                try file.syncData()
            }
            try file.write(bytes, at: offset)
            CrashPoint.reached(.afterRecordWrite)
            try file.syncData()
            CrashPoint.reached(.afterRecordSync)
        } catch {
            throw ContainerError(.io, subject: path, reason: "commit failed: \(error)")
        }
    }

    /// Makes a durably written commit the current state (what a scan would now find).
    private func applyCommit(_ manifest: Manifest, prefix: [UInt8], at offset: Int64, recordLength: Int) {
        scan.manifest = manifest
        scan.commitHeaderPrefix = prefix
        scan.commitOffset = offset
        scan.logEnd = offset + Int64(recordLength)
        scan.fileSize = max(scan.fileSize, (try? file.size()) ?? scan.fileSize)
        var live = Int64(recordLength)
        for entry in manifest.entries {
            switch entry.kind {
            case .blob: live += Int64(RecordHeader.count) + Int64(entry.size) + 16
            case .stream:
                let chunks = SealedStream.chunkCount(length: entry.size, chunkSize: ContainerFormat.chunkSize)
                live += Int64(RecordHeader.count + StreamHeader.count) + Int64(entry.size) + Int64(chunks) * 16
            }
        }
        scan.liveBytes = live
        appendPoint = scan.logEnd
    }

    /// Zeroes bytes left after the log by an append that never committed, so that the
    /// region after the log is zero again (docs/FORMAT.md §6).
    private func clearTail() throws {
        let size = try file.size()
        var cursor = scan.logEnd
        do {
            while cursor < size {
                let count = Int(min(size - cursor, 1 << 20))
                try file.write([UInt8](repeating: 0, count: count), at: cursor)
                cursor += Int64(count)
            }
            try file.syncData()
        } catch {
            throw ContainerError(.io, subject: path, reason: "could not clear an unfinished append: \(error)")
        }
        scan.hasTail = false
    }

    private func compactIfWorthIt() throws {
        let garbage = (scan.logEnd - ContainerFormat.logStart) - scan.liveBytes
        guard garbage > Self.compactionThreshold, garbage > scan.liveBytes else { return }
        try rewrite(slots: scan.manifest.slots, newKeys: nil, oldKeys: try unlockedKeys())
    }

    /// Rewrites the container into a new file holding only what the last commit names
    /// and swaps it in atomically (write, fsync, rename, fsync directory). With
    /// `newKeys`, every entry is re-encrypted and the generation increases; without,
    /// records are copied as they are and the generation stays.
    private func rewrite(slots: KeyProtectorSet, newKeys: EntryKeys?, oldKeys: EntryKeys) throws {
        let temporary = "\(path).compact-\(ProcessInfo.processInfo.processIdentifier)"
        try? FileSystem.removeFile(temporary)
        let keys = newKeys ?? oldKeys
        let generation = newKeys == nil ? self.generation : self.generation + 1
        do {
            let out = try OpenFile(creating: temporary)
            var cursor = ContainerFormat.logStart
            try out.write(scan.superblockBytes + [UInt8](repeating: 0, count: Int(ContainerFormat.logStart) - Superblock.count), at: 0)
            var entries: [EntryRecord] = []
            for entry in scan.manifest.entries {
                var moved = entry
                moved.recordOffset = cursor
                if newKeys == nil {
                    // Copy the record as it is.
                    let header = try LogScan.read(file, entry.recordOffset, RecordHeader.count)
                    guard let parsed = RecordHeader.parse(header) else {
                        throw ContainerError(.malformed, subject: path, reason: "entry \(entry.name) has no record")
                    }
                    var copied: Int64 = 0
                    let total = Int64(RecordHeader.count) + Int64(parsed.bodyLength)
                    while copied < total {
                        let piece = try LogScan.read(file, entry.recordOffset + copied, Int(min(total - copied, 4 << 20)))
                        try out.write(piece, at: cursor + copied)
                        copied += Int64(piece.count)
                    }
                    cursor += total
                } else if entry.kind == .blob {
                    let plaintext = try read(entry.name)
                    let salt = try SecureRandom.bytes(count: 16)
                    let binding = EntryBinding(vm: vm, containerID: scan.superblock.containerID, name: entry.name, generation: generation)
                    let (body, tag) = try SealedBlob.seal(plaintext, keys: keys, salt: salt, binding: binding)
                    try out.write(try RecordHeader.make(kind: .blob, bodyLength: UInt64(body.count), checkedBody: body).encoded() + body, at: cursor)
                    moved.sealedGeneration = generation
                    moved.salt = salt
                    moved.digest = tag
                    cursor += Int64(RecordHeader.count + body.count)
                } else {
                    // Re-seal a stream chunk by chunk (constant memory), reading
                    // each chunk through the old keys.
                    let oldHeader = try StreamHeader.parse(
                        LogScan.read(file, entry.recordOffset + Int64(RecordHeader.count), StreamHeader.count), subject: "\(path) entry \(entry.name)")
                    var queue: ArraySlice<UInt8> = []
                    var index: UInt64 = 0
                    let source: (inout [UInt8]) throws -> Int = { buffer in
                        if queue.isEmpty {
                            guard index < oldHeader.chunkCount else { return 0 }
                            queue = try self.readChunk(entry.name, index: index)[...]
                            index += 1
                            if queue.isEmpty { return 0 }
                        }
                        let n = min(buffer.count, queue.count)
                        buffer.replaceSubrange(0..<n, with: queue.prefix(n))
                        queue = queue.dropFirst(n)
                        return n
                    }
                    let binding = EntryBinding(vm: vm, containerID: scan.superblock.containerID, name: entry.name, generation: generation)
                    let headerOffset = cursor + Int64(RecordHeader.count)
                    let (header, digest) = try SealedStream.seal(from: source, into: out, at: headerOffset + Int64(StreamHeader.count),
                                                                 keys: keys, binding: binding)
                    let headerBytes = try header.encoded()
                    let record = try RecordHeader.make(kind: .stream, bodyLength: UInt64(StreamHeader.count) + header.sealedLength, checkedBody: headerBytes)
                    try out.write(record.encoded() + headerBytes, at: cursor)
                    moved.sealedGeneration = generation
                    moved.salt = header.salt
                    moved.digest = digest
                    cursor = headerOffset + Int64(StreamHeader.count) + Int64(header.sealedLength)
                }
                entries.append(moved)
            }
            let commit = try Self.commitRecord(generation: generation, previous: 0, slots: slots, entries: entries,
                                               keys: keys, superblockBytes: scan.superblockBytes)
            try out.write(commit + [UInt8](repeating: 0, count: Int(Self.preallocationStep)), at: cursor)
            try out.sync()
            CrashPoint.reached(.afterRewriteSync)
            try FileSystem.rename(temporary, to: path)
            CrashPoint.reached(.afterRewriteRename)
            try FileSystem.syncDirectory(FileSystem.parentDirectory(of: path))
        } catch {
            try? FileSystem.removeFile(temporary)
            if let error = error as? ContainerError { throw error }
            throw ContainerError(.io, subject: path, reason: "could not rewrite the container: \(error)")
        }
        file = try OpenFile(path: path, mode: .readWrite)
        scan = try LogScan.scan(file)
        appendPoint = scan.logEnd
        self.keys = keys
        if let vault { try vault.counters.record(vm: vm, container: containerID, generation: generation) }
    }
}

/// What `guestvault inspect` shows: everything readable without keys.
public struct ContainerInfo: Sendable, Codable, Equatable {
    public let path: String
    public let vm: UUID
    public let containerID: String
    public let generation: UInt64
    public let created: UInt64
    public let committed: UInt64
    public let entries: [EntryInfo]
    public let slots: [SlotInfo]
    public let fileSize: Int64
    public let logBytes: Int64
    public let liveBytes: Int64
}

public struct EntryInfo: Sendable, Codable, Equatable {
    public let name: String
    public let kind: String
    public let size: UInt64
    public let sealedGeneration: UInt64

    public init(name: String, kind: String, size: UInt64, sealedGeneration: UInt64) {
        self.name = name
        self.kind = kind
        self.size = size
        self.sealedGeneration = sealedGeneration
    }
}

public struct SlotInfo: Sendable, Codable, Equatable {
    public let index: Int
    public let kind: String
    public let detail: String
}
