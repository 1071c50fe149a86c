import Dispatch
public import FoundationEssentials
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultSystem
import Synchronization

/// The highest generation the vault has seen of each container, kept durably.
///
/// A counter belongs to one container: the VM *and* the container id
/// (`counters/<vm uuid>.<container id hex>.gen`, 0600), so whatever a transfer places in
/// this vault can only create or advance the counter of the container it writes, never
/// that of another container of the same VM (docs/KEYS.md §5). A file holds two 64-byte
/// records (A at offset 0, B at offset 64), each a sequence number, the generation, the
/// VM UUID and a MAC under a key derived from the root key over the record and the
/// container id. An update writes the record that does not hold the newest sequence,
/// then fdatasyncs: a crash mid-write leaves the other record intact, so the counter
/// never goes back.
///
/// Vaults made before container ids were part of the key have one counter per VM,
/// `counters/<vm uuid>.gen` (record version 1, MAC over the record alone). It stays
/// readable and is the floor for every container of that VM that has no counter of its
/// own yet; nothing but the VM-only calls below writes it.
public final class RollbackCounters: Sendable {
    public enum Verdict: Sendable, Equatable {
        /// The vault has seen no generation for this container (or VM).
        case unknown
        /// The generation is the latest the vault has seen, or newer.
        case current
        /// The vault has seen `latest`, newer than the generation offered.
        case rollback(latest: UInt64)
    }

    /// When a recorded generation must be on disk.
    public enum Durability: Sendable {
        /// Before `record` returns (pwrite + fdatasync).
        case immediate
        /// Written before `record` returns and fdatasynced right after on a background
        /// queue, overlapping the caller's next step; `flush()` waits for it. For the
        /// commit path: the container's own commit is already durable when its counter
        /// is recorded, so the counter can never be ahead of the container on disk, and
        /// a crash can only leave it behind by the last commit(s).
        case deferred
    }

    /// What a counter file counts: one container, or (legacy) a whole VM.
    struct Key: Hashable {
        let vm: UUID
        /// Nil: the legacy per-VM counter.
        let container: [UInt8]?

        var fileName: String {
            let uuid = vm.uuidString.lowercased()
            guard let container else { return uuid + ".gen" }
            return uuid + "." + hexString(container) + ".gen"
        }
    }

    let directory: String
    private let macKey: SecretBytes
    private let syncQueue = DispatchQueue(label: "guestvault.rollback-counters")
    private let syncState = Mutex<(scheduled: Set<String>, error: String?)>(([], nil))
    private struct Entry {
        let file: OpenFile
        var sequence: UInt64
        var generation: UInt64
        /// The file's 128 bytes as last verified or written here: a re-read that finds
        /// them unchanged needs no MAC computed again (two HMACs per commit saved).
        var bytes: [UInt8]? = nil
    }
    private let open = Mutex<[Key: Entry]>([:])

    static let recordCount = 64
    static let macCount = 24
    static let magic = Array("GVGN".utf8)
    /// Record versions: 1 = per VM (legacy), 2 = per container.
    static let vmRecordVersion: UInt8 = 1
    static let containerRecordVersion: UInt8 = 2

    init(directory: String, backend: any RootKeyBackend) throws {
        self.directory = directory
        self.macKey = try backend.deriveBlock(label: KeyLabels.rollbackCounters, context: [])
    }

    func path(for key: Key) -> String { FileSystem.join(directory, key.fileName) }

    func path(for vm: UUID) -> String { path(for: Key(vm: vm, container: nil)) }

    // MARK: Per container (what containers and transfers use)

    /// The highest generation recorded for this container; without a counter of its
    /// own, the legacy counter of its VM (the floor it inherits); nil if neither exists.
    /// Read from the file every time: another process may have raised it since.
    public func latest(vm: UUID, container: [UInt8]) throws -> UInt64? {
        try open.withLock { entries in
            if let own = try current(Key(vm: vm, container: container), in: &entries) { return own.generation }
            return try current(Key(vm: vm, container: nil), in: &entries)?.generation
        }
    }

    /// Whether `generation` of this container is current: not older than the vault has
    /// seen of it (or, without a counter of its own, of its VM under the legacy counter).
    public func check(vm: UUID, container: [UInt8], generation: UInt64) throws -> Verdict {
        guard let latest = try latest(vm: vm, container: container) else { return .unknown }
        return generation >= latest ? .current : .rollback(latest: latest)
    }

    /// Whether this vault has a counter of its own for the container: it has held (or
    /// holds) that container. A transfer refuses to place such a container anywhere but
    /// over the copy it updates.
    public func hasCounter(vm: UUID, container: [UInt8]) -> Bool {
        FileSystem.exists(path(for: Key(vm: vm, container: container)))
    }

    /// Records that `generation` of the container exists; durable when this returns, or
    /// soon after with `.deferred`. Never lowers the counter.
    public func record(vm: UUID, container: [UInt8], generation: UInt64, durability: Durability = .immediate) throws {
        guard container.count == 16 else {
            throw VaultError(.invalidArgument, subject: directory, reason: "a container id is 16 bytes, not \(container.count)")
        }
        try record(Key(vm: vm, container: container), generation: generation, durability: durability)
    }

    /// Removes the container's own counter. Only for the receiver of a transfer that
    /// created the counter and then failed before the container was in place: the
    /// counter of a container that exists here is never removed.
    public func forget(vm: UUID, container: [UInt8]) throws {
        let key = Key(vm: vm, container: container)
        try open.withLock { entries in
            entries[key] = nil
            try FileSystem.removeFile(path(for: key))
        }
    }

    // MARK: Per VM (the legacy counter)

    /// The highest generation recorded for `vm` under any counter: the legacy per-VM
    /// counter and every container's.
    public func latest(vm: UUID) throws -> UInt64? {
        let prefix = vm.uuidString.lowercased() + "."
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasPrefix(prefix) && $0.hasSuffix(".gen") }
        var best: UInt64?
        for name in names {
            let middle = name.dropFirst(prefix.count).dropLast(4)
            let key: Key
            if middle.isEmpty {
                key = Key(vm: vm, container: nil)
            } else if let id = bytes(fromHex: String(middle)), id.count == 16 {
                key = Key(vm: vm, container: id)
            } else {
                continue
            }
            if let value = try open.withLock({ try current(key, in: &$0)?.generation }) { best = max(best ?? 0, value) }
        }
        return best
    }

    /// Whether `generation` is current under the legacy per-VM counter.
    public func check(vm: UUID, generation: UInt64) throws -> Verdict {
        guard let latest = try open.withLock({ try current(Key(vm: vm, container: nil), in: &$0)?.generation }) else { return .unknown }
        return generation >= latest ? .current : .rollback(latest: latest)
    }

    /// Records `generation` in the legacy per-VM counter (vaults and vectors made before
    /// per-container counters; the floor of every container of `vm` without its own).
    public func record(vm: UUID, generation: UInt64, durability: Durability = .immediate) throws {
        try record(Key(vm: vm, container: nil), generation: generation, durability: durability)
    }

    // MARK: Files

    /// The counter's entry as the file holds it now (the open file is kept).
    private func current(_ key: Key, in entries: inout [Key: Entry]) throws -> Entry? {
        if let existing = entries[key] {
            let bytes = try readBytes(existing.file)
            if let known = existing.bytes, known == bytes { return existing }
            let fresh = try verify(bytes, of: existing.file, key: key)
            entries[key] = fresh
            return fresh
        }
        guard let loaded = try load(key) else { return nil }
        entries[key] = loaded
        return loaded
    }

    private func record(_ key: Key, generation: UInt64, durability: Durability) throws {
        if let failure = syncState.withLock({ state -> String? in defer { state.error = nil }; return state.error }) {
            throw VaultError(.io, subject: directory, reason: "a deferred rollback counter sync failed: \(failure)")
        }
        let file: OpenFile? = try open.withLock { entries -> OpenFile? in
            // Re-read, so a record another process wrote since is neither missed nor
            // overwritten (the next write goes to the other record than the newest).
            var entry = try current(key, in: &entries) ?? createFile(key)
            if generation <= entry.generation && entry.sequence > 0 {
                entries[key] = entry
                return nil
            }
            let (sequence, overflow) = entry.sequence.addingReportingOverflow(1)
            guard !overflow else {
                throw VaultError(.corrupt, subject: entry.file.path, reason: "the rollback counter has used every sequence number")
            }
            let record = try encode(key, sequence: sequence, generation: generation)
            let offset = Int64((sequence % 2) * UInt64(Self.recordCount))
            do {
                try entry.file.write(record, at: offset)
                CrashPoint.reached(.afterCounterWrite)
                if durability == .immediate {
                    try entry.file.syncData()
                    CrashPoint.reached(.afterCounterSync)
                }
            } catch {
                entries[key] = nil
                throw VaultError(.io, subject: entry.file.path, reason: "could not record generation \(generation): \(error)")
            }
            entry.sequence = sequence
            entry.generation = generation
            if var bytes = entry.bytes, bytes.count == 2 * Self.recordCount, record.count == Self.recordCount {
                bytes.replaceSubrange(Int(offset)..<(Int(offset) + Self.recordCount), with: record)
                entry.bytes = bytes
            } else {
                entry.bytes = nil
            }
            entries[key] = entry
            return durability == .deferred ? entry.file : nil
        }
        if let file { scheduleSync(file) }
    }

    private func scheduleSync(_ file: OpenFile) {
        let first = syncState.withLock { $0.scheduled.insert(file.path).inserted }
        guard first else { return }
        syncQueue.async { [self] in
            syncState.withLock { _ = $0.scheduled.remove(file.path) }
            do {
                try file.syncData()
                CrashPoint.reached(.afterCounterSync)
            } catch {
                syncState.withLock { $0.error = $0.error ?? "\(error)" }
            }
        }
    }

    /// Waits until every deferred record is on disk.
    public func flush() throws {
        syncQueue.sync {}
        if let failure = syncState.withLock({ state -> String? in defer { state.error = nil }; return state.error }) {
            throw VaultError(.io, subject: directory, reason: "a deferred rollback counter sync failed: \(failure)")
        }
    }

    /// A new counter file of two empty records, made durably and never over another
    /// (a counter another process created meanwhile is used instead).
    private func createFile(_ key: Key) throws -> Entry {
        let path = path(for: key)
        do {
            do {
                try DurableFile.write([UInt8](repeating: 0, count: 2 * Self.recordCount), to: path, .creatingNew)
            } catch let error as SystemError where error.code == .fileExists {
                if let existing = try load(key) { return existing }
                throw error
            }
            return Entry(file: try SafeOpen.existing(path, mode: .readWrite), sequence: 0, generation: 0)
        } catch let error as VaultError {
            throw error
        } catch {
            throw VaultError(.io, subject: path, reason: "could not create the rollback counter: \(error)")
        }
    }

    /// Opens an existing counter (never through a symlink, never a FIFO or device).
    private func load(_ key: Key) throws -> Entry? {
        let path = path(for: key)
        let file: OpenFile
        do {
            file = try SafeOpen.existing(path, mode: .readWrite)
        } catch let error as SystemError where error.isNotFound {
            return nil
        } catch {
            throw VaultError(.io, subject: path, reason: "could not open the rollback counter: \(error)")
        }
        return try read(file, key: key)
    }

    /// Both records of an open counter file; the newest that verifies wins.
    private func read(_ file: OpenFile, key: Key) throws -> Entry {
        try verify(try readBytes(file), of: file, key: key)
    }

    /// The whole counter file (one byte more is asked for, so a longer file shows).
    private func readBytes(_ file: OpenFile) throws -> [UInt8] {
        do { return try file.read(at: 0, count: 2 * Self.recordCount + 1) } catch {
            throw VaultError(.io, subject: file.path, reason: "could not read the rollback counter: \(error)")
        }
    }

    /// The newest record of `bytes` (a counter file's contents) that verifies.
    private func verify(_ bytes: [UInt8], of file: OpenFile, key: Key) throws -> Entry {
        let path = file.path
        guard bytes.count == 2 * Self.recordCount else {
            throw VaultError(.corrupt, subject: path, reason: "rollback counter file is \(bytes.count) bytes, expected \(2 * Self.recordCount)")
        }
        var best: (sequence: UInt64, generation: UInt64)?
        for index in 0..<2 {
            let record = Array(bytes[(index * Self.recordCount)..<((index + 1) * Self.recordCount)])
            if let parsed = try decode(record, key: key), parsed.sequence > (best?.sequence ?? 0) {
                best = parsed
            }
        }
        guard let best else {
            if bytes.allSatisfy({ $0 == 0 }) {
                return Entry(file: file, sequence: 0, generation: 0, bytes: bytes)
            }
            throw VaultError(.corrupt, subject: path, reason: "neither rollback counter record verifies: the file was changed or damaged")
        }
        return Entry(file: file, sequence: best.sequence, generation: best.generation, bytes: bytes)
    }

    /// The MAC input: the record's first 40 bytes, then the container id (version 2).
    private func macInput(_ body: [UInt8], _ key: Key) -> [UInt8] { body + (key.container ?? []) }

    private func encode(_ key: Key, sequence: UInt64, generation: UInt64) throws -> [UInt8] {
        var record = Self.magic + [key.container == nil ? Self.vmRecordVersion : Self.containerRecordVersion, 0, 0, 0]
        record += sequence.bigEndianBytes + generation.bigEndianBytes + KeyLabels.uuidBytes(key.vm)
        record += Array(try HMACSHA256.authenticationCode(for: macInput(record, key), key: macKey).prefix(Self.macCount))
        return record
    }

    private func decode(_ record: [UInt8], key: Key) throws -> (sequence: UInt64, generation: UInt64)? {
        let version = key.container == nil ? Self.vmRecordVersion : Self.containerRecordVersion
        guard Array(record[0..<4]) == Self.magic, record[4] == version else { return nil }
        let body = Array(record[0..<40])
        let mac = Array(try HMACSHA256.authenticationCode(for: macInput(body, key), key: macKey).prefix(Self.macCount))
        guard constantTimeEquals(mac, Array(record[40..<64])) else { return nil }
        guard Array(record[24..<40]) == KeyLabels.uuidBytes(key.vm) else { return nil }
        // The record's length was checked: each slice is exactly 8 bytes.
        return (UInt64(bigEndianBytes: record[8..<16]) ?? 0, UInt64(bigEndianBytes: record[16..<24]) ?? 0)
    }
}
