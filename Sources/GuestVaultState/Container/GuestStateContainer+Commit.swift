import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultSystem

extension GuestStateContainer {
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
        let next = try nextGeneration()
        let recordOffset = appendPoint
        let headerOffset = recordOffset + Int64(RecordHeader.count)
        let binding = EntryBinding(vm: vm, containerID: scan.superblock.containerID, name: name, generation: next)
        let (header, digest) = try SealedStream.seal(from: source, into: storage, at: headerOffset + Int64(StreamHeader.count),
                                                     keys: keys, binding: binding, progress: progress)
        let headerBytes = try header.encoded()
        let record = try RecordHeader.make(kind: .stream, bodyLength: UInt64(StreamHeader.count) + header.sealedLength, checkedBody: headerBytes)
        do {
            try storage.write(record.encoded() + headerBytes, at: recordOffset)
        } catch {
            throw ContainerError.io(error, subject: path, "could not write stream \(name)")
        }
        appendPoint = try LogScan.checked { () throws(Checked.Overflow) -> Int64 in
            try Checked.add(headerOffset + Int64(StreamHeader.count), try Checked.convert(header.sealedLength, to: Int64.self, "stream length"),
                            "end of stream")
        }
        stage(name, .stream(offset: recordOffset, header: header, digest: digest))
    }

    /// Stages the removal of entry `name`.
    public func remove(_ name: String) throws {
        try checkWritable(name)
        guard pending[name] != nil || scan.manifest.entries.contains(where: { EntryName.same($0.name, name) }) else {
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
        let next = try nextGeneration()
        // Keyed by the names' bytes: a String key would merge canonically equivalent
        // names that an older writer may have stored as two entries (docs/FORMAT.md §3.4).
        var entries = Dictionary(scan.manifest.entries.map { (Array($0.name.utf8), $0) }, uniquingKeysWith: { first, _ in first })
        var buffer: [UInt8] = []
        var cursor = appendPoint
        var hasStreams = false
        var newRecords: [Int64: UInt64] = [:]
        for name in pendingOrder {
            guard let change = pending[name] else { continue }
            switch change {
            case .removed:
                entries[Array(name.utf8)] = nil
            case .stream(let offset, let header, let digest):
                hasStreams = true
                newRecords[offset] = UInt64(StreamHeader.count) + header.sealedLength
                entries[Array(name.utf8)] = EntryRecord(name: name, kind: .stream, sealedGeneration: next, size: header.length,
                                            recordOffset: offset, salt: header.salt, digest: digest)
            case .blob(let plaintext):
                let salt = try SecureRandom.bytes(count: 16)
                let binding = EntryBinding(vm: vm, containerID: scan.superblock.containerID, name: name, generation: next)
                let (body, tag) = try SealedBlob.seal(plaintext, keys: keys, salt: salt, binding: binding)
                let record = try RecordHeader.make(kind: .blob, bodyLength: UInt64(body.count), checkedBody: body)
                entries[Array(name.utf8)] = EntryRecord(name: name, kind: .blob, sealedGeneration: next, size: UInt64(plaintext.count),
                                            recordOffset: cursor, salt: salt, digest: tag)
                newRecords[cursor] = UInt64(body.count)
                buffer += record.encoded()
                buffer += body
                cursor += Int64(RecordHeader.count + body.count)
            }
        }
        guard entries.count <= ContainerFormat.maximumEntries else {
            throw ContainerError(.limit, subject: path, reason: "more than \(ContainerFormat.maximumEntries) entries")
        }
        let sorted = entries.values.sorted { EntryName.precedes($0.name, $1.name) }
        let commitOffset = cursor
        let commit = try CommitRecord(generation: next, previous: scan.commitOffset, slots: scan.manifest.slots, entries: sorted,
                                      keys: keys, superblockBytes: scan.superblockBytes)
        buffer += commit.bytes
        try durablyAppend(buffer, at: appendPoint, syncFirst: hasStreams)
        try applyCommit(commit, at: commitOffset, newRecords: newRecords)
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

    // MARK: Internals

    func stage(_ name: String, _ change: Pending) {
        if pending[name] == nil { pendingOrder.append(name) }
        pending[name] = change
    }

    func checkWritable(_ name: String) throws {
        guard access == .readWrite else { throw ContainerError(.readOnly, subject: path, reason: "opened read-only; nothing can be written") }
        guard EntryName.isValid(name) else {
            throw ContainerError(.invalidName, subject: path,
                                 reason: "\"\(name.unicodeScalars.map { $0.properties.generalCategory == .control || $0.properties.generalCategory == .format ? "\\u{\(String($0.value, radix: 16))}" : String($0) }.joined())\" is not a valid entry name (1 to 255 bytes of UTF-8 in NFC; no controls, format characters, U+FFFD, or white space other than inner spaces; docs/FORMAT.md §3.4)")
        }
        _ = try unlockedKeys()
    }

    /// Writes `bytes` at `offset` (extending the preallocated zero region first if
    /// needed) and fdatasyncs. With `syncFirst`, earlier writes (stream data) are made
    /// durable before the commit is written, so a commit never names data that could
    /// be lost.
    func durablyAppend(_ bytes: [UInt8], at offset: Int64, syncFirst: Bool) throws {
        do {
            let needed = try Checked.add(offset, Int64(bytes.count + RecordHeader.count), "end of the commit")
            let size = try storage.size()
            if needed > size {
                let target = try Checked.add(needed, Self.preallocationStep, "preallocated size")
                try storage.write([UInt8](repeating: 0, count: Int(target - size)), at: size)
                try storage.sync()
            } else if syncFirst {
                try storage.syncData()
            }
            try storage.write(bytes, at: offset)
            CrashPoint.reached(.afterRecordWrite)
            try storage.syncData()
            CrashPoint.reached(.afterRecordSync)
        } catch {
            throw ContainerError.io(error, subject: path, "commit failed")
        }
    }

    /// Makes a durably written commit the current state (what a scan would now find).
    /// `newRecords` are the body lengths of the records this commit added.
    func applyCommit(_ commit: CommitRecord, at offset: Int64, newRecords: [Int64: UInt64] = [:]) throws {
        let lengths = scan.recordLengths.merging(newRecords) { $1 }
        var named: [Int64: UInt64] = [:]
        var live = Int64(commit.bytes.count)
        for entry in commit.manifest.entries {
            guard let length = lengths[entry.recordOffset] else { continue }
            named[entry.recordOffset] = length
            // Every record lies inside the file, so the sum stays far below Int64.max.
            live = try LogScan.checked { () throws(Checked.Overflow) -> Int64 in
                try Checked.add(live, try Checked.add(Int64(RecordHeader.count), try Checked.convert(length, to: Int64.self, "record"), "record"),
                                "live bytes")
            }
        }
        scan.manifest = commit.manifest
        scan.commitHeaderPrefix = commit.headerPrefix
        scan.commitOffset = offset
        scan.logEnd = offset + Int64(commit.bytes.count)
        scan.fileSize = max(scan.fileSize, (try? storage.size()) ?? scan.fileSize)
        scan.recordLengths = named
        scan.liveBytes = live
        appendPoint = scan.logEnd
    }

    /// Zeroes bytes left after the log by an append that never committed, so that the
    /// region after the log is zero again (docs/FORMAT.md §6).
    func clearTail() throws {
        do {
            let size = try storage.size()
            var cursor = scan.logEnd
            while cursor < size {
                let count = Int(min(size - cursor, 1 << 20))
                try storage.write([UInt8](repeating: 0, count: count), at: cursor)
                cursor += Int64(count)
            }
            try storage.syncData()
        } catch {
            throw ContainerError.io(error, subject: path, "could not clear an unfinished append")
        }
        scan.hasTail = false
    }
}
