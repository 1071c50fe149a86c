public import Foundation
import GuestVaultCrypto
import Dispatch
import GuestVaultSystem
import Synchronization

/// The highest container generation the vault has seen for each VM, kept durably.
///
/// Each VM has one file, `counters/<uuid>.gen` (0600), of two 64-byte records (A at
/// offset 0, B at offset 64). A record holds a sequence number, the generation, the VM
/// UUID and a MAC under a key derived from the root key. An update writes the record
/// that does not hold the newest sequence, then fdatasyncs: a crash mid-write leaves
/// the other record intact, so the counter never goes back. The layout is in
/// docs/KEYS.md.
public final class RollbackCounters: Sendable {
    public enum Verdict: Sendable, Equatable {
        /// The vault has seen no generation for this VM.
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

    let directory: String
    private let macKey: SecretBytes
    private let syncQueue = DispatchQueue(label: "guestvault.rollback-counters")
    private let syncState = Mutex<(scheduled: Set<String>, error: String?)>(([], nil))
    private struct Entry { let file: OpenFile; var sequence: UInt64; var generation: UInt64 }
    private let open = Mutex<[UUID: Entry]>([:])

    static let recordCount = 64
    static let macCount = 24
    static let magic = Array("GVGN".utf8)

    init(directory: String, backend: any RootKeyBackend) throws {
        self.directory = directory
        self.macKey = try backend.deriveBlock(label: KeyLabels.rollbackCounters, context: [])
    }

    func path(for vm: UUID) -> String {
        FileSystem.join(directory, vm.uuidString.lowercased() + ".gen")
    }

    /// The highest generation recorded for `vm`, or nil if none. Read from the file
    /// every time: another process (a `put` between two runs of `serve`) may have raised
    /// it since this one last looked.
    public func latest(vm: UUID) throws -> UInt64? {
        try open.withLock { entries in try current(vm, in: &entries)?.generation }
    }

    /// The counter's entry as the file holds it now (the open file is kept).
    private func current(_ vm: UUID, in entries: inout [UUID: Entry]) throws -> Entry? {
        if let existing = entries[vm] {
            let fresh = try read(existing.file, vm: vm)
            entries[vm] = fresh
            return fresh
        }
        guard let loaded = try load(vm) else { return nil }
        entries[vm] = loaded
        return loaded
    }

    /// Whether `generation` is current for `vm`: not older than the vault has seen.
    public func check(vm: UUID, generation: UInt64) throws -> Verdict {
        guard let latest = try latest(vm: vm) else { return .unknown }
        return generation >= latest ? .current : .rollback(latest: latest)
    }

    /// Records that `generation` of `vm` exists; durable when this returns, or soon after
    /// with `.deferred`. Never lowers the counter: recording an older generation changes
    /// nothing.
    public func record(vm: UUID, generation: UInt64, durability: Durability = .immediate) throws {
        if let failure = syncState.withLock({ state -> String? in defer { state.error = nil }; return state.error }) {
            throw VaultError(.io, subject: directory, reason: "a deferred rollback counter sync failed: \(failure)")
        }
        let file: OpenFile? = try open.withLock { entries -> OpenFile? in
            // Re-read, so a record another process wrote since is neither missed nor
            // overwritten (the next write goes to the other record than the newest).
            var entry = try current(vm, in: &entries) ?? createFile(vm)
            if generation <= entry.generation && entry.sequence > 0 {
                entries[vm] = entry
                return nil
            }
            let sequence = entry.sequence + 1
            let record = try encode(vm: vm, sequence: sequence, generation: generation)
            let offset = Int64((sequence % 2) * UInt64(Self.recordCount))
            do {
                try entry.file.write(record, at: offset)
                CrashPoint.reached(.afterCounterWrite)
                if durability == .immediate {
                    try entry.file.syncData()
                    CrashPoint.reached(.afterCounterSync)
                }
            } catch {
                entries[vm] = nil
                throw VaultError(.io, subject: entry.file.path, reason: "could not record generation \(generation): \(error)")
            }
            entry.sequence = sequence
            entry.generation = generation
            entries[vm] = entry
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

    private func createFile(_ vm: UUID) throws -> Entry {
        let path = path(for: vm)
        do {
            // Two empty records; the first real write makes sequence 1 in record B.
            try FileSystem.writeAtomically([UInt8](repeating: 0, count: 2 * Self.recordCount), to: path)
            return Entry(file: try OpenFile(path: path, mode: .readWrite), sequence: 0, generation: 0)
        } catch {
            throw VaultError(.io, subject: path, reason: "could not create the rollback counter: \(error)")
        }
    }

    private func load(_ vm: UUID) throws -> Entry? {
        let path = path(for: vm)
        let file: OpenFile
        do {
            file = try OpenFile(path: path, mode: .readWrite)
        } catch let error as SystemError where error.isNotFound {
            return nil
        } catch {
            throw VaultError(.io, subject: path, reason: "could not open the rollback counter: \(error)")
        }
        return try read(file, vm: vm)
    }

    /// Both records of an open counter file; the newest that verifies wins.
    private func read(_ file: OpenFile, vm: UUID) throws -> Entry {
        let path = file.path
        let bytes: [UInt8]
        do { bytes = try file.read(at: 0, count: 2 * Self.recordCount + 1) } catch {
            throw VaultError(.io, subject: path, reason: "could not read the rollback counter: \(error)")
        }
        guard bytes.count == 2 * Self.recordCount else {
            throw VaultError(.corrupt, subject: path, reason: "rollback counter file is \(bytes.count) bytes, expected \(2 * Self.recordCount)")
        }
        var best: (sequence: UInt64, generation: UInt64)?
        for index in 0..<2 {
            let record = Array(bytes[(index * Self.recordCount)..<((index + 1) * Self.recordCount)])
            if let parsed = try decode(record, vm: vm), parsed.sequence > (best?.sequence ?? 0) {
                best = parsed
            }
        }
        guard let best else {
            if bytes.allSatisfy({ $0 == 0 }) {
                return Entry(file: file, sequence: 0, generation: 0)
            }
            throw VaultError(.corrupt, subject: path, reason: "neither rollback counter record verifies: the file was changed or damaged")
        }
        return Entry(file: file, sequence: best.sequence, generation: best.generation)
    }

    func encode(vm: UUID, sequence: UInt64, generation: UInt64) throws -> [UInt8] {
        var record = Self.magic + [1, 0, 0, 0]
        record += bigEndian(sequence) + bigEndian(generation) + KeyLabels.uuidBytes(vm)
        record += Array(try HMACSHA256.authenticationCode(for: record, key: macKey).prefix(Self.macCount))
        return record
    }

    func decode(_ record: [UInt8], vm: UUID) throws -> (sequence: UInt64, generation: UInt64)? {
        guard Array(record[0..<4]) == Self.magic, record[4] == 1 else { return nil }
        let body = Array(record[0..<40])
        let mac = Array(try HMACSHA256.authenticationCode(for: body, key: macKey).prefix(Self.macCount))
        guard constantTimeEquals(mac, Array(record[40..<64])) else { return nil }
        guard Array(record[24..<40]) == KeyLabels.uuidBytes(vm) else { return nil }
        return (readBigEndian(record, at: 8), readBigEndian(record, at: 16))
    }
}

func bigEndian(_ value: UInt64) -> [UInt8] {
    (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64($0))) }
}

func bigEndian(_ value: UInt32) -> [UInt8] {
    (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32($0))) }
}

func readBigEndian(_ bytes: [UInt8], at offset: Int) -> UInt64 {
    (0..<8).reduce(0) { $0 << 8 | UInt64(bytes[offset + $1]) }
}

func readBigEndian32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
    (0..<4).reduce(0) { $0 << 8 | UInt32(bytes[offset + $1]) }
}
