import FoundationEssentials
import GuestVaultCore
import GuestVaultCrypto

/// A named point in time of a container, kept sealed inside it (docs/FORMAT.md §10).
public struct SnapshotInfo: Sendable, Codable, Equatable {
    public let name: String
    /// Unix time of the snapshot.
    public let created: UInt64
    /// The generation whose entries the snapshot holds.
    public let generation: UInt64
    /// Who took it (user, host, process), as the taker gave it.
    public let takenBy: String
    /// The entries it holds, in byte order.
    public let entries: [String]
}

/// What a revert records about itself in `snapshot/.log`, sealed and committed with the
/// reverted entries: who, when, from which generation, to which snapshot.
public struct RevertRecord: Sendable, Codable, Equatable {
    public let snapshot: String
    /// The generation the snapshot was taken at.
    public let snapshotGeneration: UInt64
    /// The generation the container had before the revert.
    public let fromGeneration: UInt64
    /// The generation of the revert's own commit.
    public let generation: UInt64
    public let reverted: UInt64
    public let revertedBy: String
}

extension GuestStateContainer {
    /// Every entry name under this prefix belongs to the snapshots: `snapshot/NAME` (the
    /// snapshot's ``SnapshotInfo`` as JSON), `snapshot/NAME/ENTRY` (a sealed copy of
    /// ENTRY), and `snapshot/.log` (the ``RevertRecord``s as a JSON array).
    public static let snapshotPrefix = "snapshot/"
    static let revertLogName = "snapshot/.log"
    /// How many revert records the log keeps (the oldest go first).
    static let revertLogLimit = 1000

    /// Whether `name` is one of the snapshots' own entries (not part of the VM's state).
    public static func isSnapshotEntry(_ name: String) -> Bool { name.utf8.starts(with: snapshotPrefix.utf8) }

    /// A snapshot name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with a dot.
    public static func isValidSnapshotName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...64).contains(bytes.count), bytes[0] != UInt8(ascii: ".") else { return false }
        return bytes.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
        }
    }

    /// The VM's own entries (everything but the snapshots').
    public var stateEntryNames: [String] { entryNames.filter { !Self.isSnapshotEntry($0) } }

    /// Seals a copy of every state entry as it is at the current generation under
    /// `snapshot/NAME/`, with the snapshot's description, and commits. Needs the
    /// container unlocked for writing, with nothing staged.
    @discardableResult
    public func createSnapshot(_ name: String, takenBy: String) throws -> SnapshotInfo {
        try checkSnapshotName(name)
        try checkNothingStaged()
        guard !entryNames.contains(where: { EntryName.same($0, Self.snapshotPrefix + name) }) else {
            throw ContainerError(.alreadyExists, subject: "\(path) snapshot \(name)", reason: "a snapshot of this name exists; delete it first or choose another name")
        }
        let names = stateEntryNames
        let info = SnapshotInfo(name: name, created: UInt64(Date().timeIntervalSince1970), generation: generation,
                                takenBy: takenBy, entries: names)
        do {
            for entry in names { try copyEntry(entry, to: "\(Self.snapshotPrefix)\(name)/\(entry)") }
            try write(Self.snapshotPrefix + name, try encodeJSON(info))
            try commit()
        } catch {
            discardPendingChanges()
            throw error
        }
        return info
    }

    /// The snapshots, authenticated (needs the container unlocked), oldest first.
    public func snapshots() throws -> [SnapshotInfo] {
        _ = try unlockedKeys()
        var result: [SnapshotInfo] = []
        for entry in entryNames where Self.isSnapshotEntry(entry) {
            let name = String(decoding: entry.utf8.dropFirst(Self.snapshotPrefix.utf8.count), as: UTF8.self)
            guard Self.isValidSnapshotName(name) else { continue }
            result.append(try snapshotInfo(name))
        }
        return result.sorted { ($0.generation, $0.name) < ($1.generation, $1.name) }
    }

    /// The reverts this container has recorded, oldest first (needs it unlocked).
    public func revertLog() throws -> [RevertRecord] {
        _ = try unlockedKeys()
        guard entryNames.contains(Self.revertLogName) else { return [] }
        return try decodeJSON([RevertRecord].self, read(Self.revertLogName), what: "the revert log")
    }

    /// Puts the state entries back as snapshot `name` holds them — an authorized
    /// rollback that moves forward: the entries are committed anew at the next
    /// generation (so the vault's rollback counter rises as for any commit), entries
    /// made after the snapshot are removed, and a ``RevertRecord`` is committed with
    /// them. Snapshots stay. Needs the container unlocked for writing.
    @discardableResult
    public func revert(toSnapshot name: String, revertedBy: String) throws -> RevertRecord {
        try checkSnapshotName(name)
        try checkNothingStaged()
        let info = try snapshotInfo(name)
        let from = generation
        let record = RevertRecord(snapshot: name, snapshotGeneration: info.generation, fromGeneration: from,
                                  generation: try nextGeneration(), reverted: UInt64(Date().timeIntervalSince1970), revertedBy: revertedBy)
        var log = try revertLog()
        log.append(record)
        if log.count > Self.revertLogLimit { log.removeFirst(log.count - Self.revertLogLimit) }
        do {
            for entry in stateEntryNames where !info.entries.contains(where: { EntryName.same($0, entry) }) {
                try remove(entry)
            }
            for entry in info.entries {
                try copyEntry("\(Self.snapshotPrefix)\(name)/\(entry)", to: entry)
            }
            try write(Self.revertLogName, try encodeJSON(log))
            try commit()
        } catch {
            discardPendingChanges()
            throw error
        }
        return record
    }

    /// Removes snapshot `name` and its copies, and commits.
    public func deleteSnapshot(_ name: String) throws {
        try checkSnapshotName(name)
        try checkNothingStaged()
        _ = try snapshotInfo(name)
        let prefix = "\(Self.snapshotPrefix)\(name)/"
        do {
            for entry in entryNames where entry.utf8.starts(with: prefix.utf8) { try remove(entry) }
            try remove(Self.snapshotPrefix + name)
            try commit()
        } catch {
            discardPendingChanges()
            throw error
        }
    }

    // MARK: Internals

    private func snapshotInfo(_ name: String) throws -> SnapshotInfo {
        let entry = Self.snapshotPrefix + name
        guard entryNames.contains(where: { EntryName.same($0, entry) }) else {
            let known = entryNames.filter(Self.isSnapshotEntry).compactMap { full -> String? in
                let rest = String(decoding: full.utf8.dropFirst(Self.snapshotPrefix.utf8.count), as: UTF8.self)
                return Self.isValidSnapshotName(rest) ? rest : nil
            }
            throw ContainerError(.noSuchEntry, subject: "\(path) snapshot \(name)",
                                 reason: "no such snapshot (snapshots: \(known.isEmpty ? "none" : known.joined(separator: ", ")))")
        }
        let info = try decodeJSON(SnapshotInfo.self, read(entry), what: "snapshot \(name)")
        guard info.name == name else {
            throw ContainerError(.malformed, subject: "\(path) snapshot \(name)", reason: "its description names snapshot \(info.name)")
        }
        for copy in info.entries {
            guard entryNames.contains(where: { EntryName.same($0, "\(entry)/\(copy)") }) else {
                throw ContainerError(.malformed, subject: "\(path) snapshot \(name)", reason: "its copy of entry \(copy) is missing")
            }
        }
        return info
    }

    private func checkSnapshotName(_ name: String) throws {
        guard Self.isValidSnapshotName(name) else {
            throw ContainerError(.invalidName, subject: path,
                                 reason: "\"\(name)\" is not a snapshot name (1 to 64 of A-Z a-z 0-9 . _ -, not starting with a dot)")
        }
    }

    private func checkNothingStaged() throws {
        _ = try unlockedKeys()
        guard access == .readWrite else { throw ContainerError(.readOnly, subject: path, reason: "opened read-only; snapshots need the writer lock") }
        guard pending.isEmpty else { throw ContainerError(.readOnly, subject: path, reason: "commit or discard staged changes first") }
    }

    /// Stages committed entry `source` as `target`, re-sealed under the target's name:
    /// a blob in one piece, a stream chunk by chunk (constant memory).
    private func copyEntry(_ source: String, to target: String) throws {
        let entry = try committedEntry(source)
        guard EntryName.isValid(target) else {
            throw ContainerError(.limit, subject: "\(path) entry \(source)", reason: "the name is too long to be kept in a snapshot (\(target.utf8.count) bytes, at most \(EntryName.maximumByteCount))")
        }
        switch entry.kind {
        case .blob:
            try write(target, read(source))
        case .stream:
            let (_, header) = try streamHeader(entry)
            var queue: ArraySlice<UInt8> = []
            var index: UInt64 = 0
            try writeStream(target) { buffer in
                while queue.isEmpty {
                    guard index < header.chunkCount else { return 0 }
                    queue = try self.readChunk(source, index: index)[...]
                    index += 1
                }
                let n = min(buffer.count, queue.count)
                buffer.replaceSubrange(0..<n, with: queue.prefix(n))
                queue = queue.dropFirst(n)
                return n
            }
        }
    }

    private func encodeJSON<T: Encodable>(_ value: T) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(value))
    }

    private func decodeJSON<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw ContainerError(.malformed, subject: path, reason: "\(what) cannot be read", underlying: error)
        }
    }
}
