import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultSystem

extension GuestStateContainer {
    /// Compacts when more than ``compactionThreshold`` bytes of the log, and more than
    /// half of it, are records the last commit no longer names.
    func compactIfWorthIt() throws {
        let garbage = (scan.logEnd - ContainerFormat.logStart) - scan.liveBytes
        guard garbage > Self.compactionThreshold, garbage > scan.liveBytes else { return }
        try rewrite(slots: scan.manifest.slots, newKeys: nil, oldKeys: try unlockedKeys(), generation: generation)
    }

    /// Rewrites the container into a new storage holding only what the last commit names
    /// and swaps it in atomically (for a file: ``GuestVaultSystem/StagedFile`` beside it,
    /// fsync, rename, fsync the directory). With `newKeys`, every entry is re-encrypted
    /// and sealed at `generation` (the next one); without, records are copied as they
    /// are and the generation stays.
    func rewrite(slots: KeyProtectorSet, newKeys: EntryKeys?, oldKeys: EntryKeys, generation: UInt64) throws {
        let keys = newKeys ?? oldKeys
        let published: any ContainerStorage
        do {
            let staged = try storage.stageReplacement()
            let out = staged.storage
            try out.write(scan.superblockBytes + [UInt8](repeating: 0, count: Int(ContainerFormat.logStart) - Superblock.count), at: 0)
            var cursor = ContainerFormat.logStart
            var entries: [EntryRecord] = []
            for entry in scan.manifest.entries {
                var moved = entry
                moved.recordOffset = cursor
                if newKeys == nil {
                    cursor = try copyRecord(of: entry, to: out, at: cursor)
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
                    let (next, header, digest) = try resealStream(entry, keys: keys, generation: generation, to: out, at: cursor)
                    moved.sealedGeneration = generation
                    moved.salt = header.salt
                    moved.digest = digest
                    cursor = next
                }
                entries.append(moved)
            }
            let commit = try CommitRecord(generation: generation, previous: 0, slots: slots, entries: entries,
                                          keys: keys, superblockBytes: scan.superblockBytes)
            try out.write(commit.bytes + [UInt8](repeating: 0, count: Int(Self.preallocationStep)), at: cursor)
            try out.sync()
            CrashPoint.reached(.afterRewriteSync)
            published = try staged.publish()
            CrashPoint.reached(.afterRewriteRename)
        } catch {
            throw ContainerError.io(error, subject: path, "could not rewrite the container")
        }
        storage = published
        scan = try LogScan.scan(storage)
        appendPoint = scan.logEnd
        self.keys = keys
        if let vault { try vault.counters.record(vm: vm, container: containerID, generation: generation) }
    }

    /// Copies an entry's record as it is (a piece at a time); returns where the copy ends.
    private func copyRecord(of entry: EntryRecord, to out: any ContainerStorage, at cursor: Int64) throws -> Int64 {
        guard let bodyLength = scan.recordLengths[entry.recordOffset] else {
            throw ContainerError(.malformed, subject: path, reason: "entry \(entry.name) has no record")
        }
        // The record lies inside the file (the scan checked it).
        let total = Int64(RecordHeader.count) + Int64(bodyLength)
        var copied: Int64 = 0
        while copied < total {
            let piece = try LogScan.read(storage, entry.recordOffset + copied, Int(min(total - copied, 4 << 20)))
            guard !piece.isEmpty else { throw ContainerError(.truncated, subject: path, reason: "entry \(entry.name)'s record is cut short") }
            try out.write(piece, at: cursor + copied)
            copied += Int64(piece.count)
        }
        return cursor + total
    }

    /// Re-seals a stream chunk by chunk (constant memory), reading each chunk through
    /// the old keys; returns where the new record ends, its header and digest.
    private func resealStream(
        _ entry: EntryRecord, keys: EntryKeys, generation: UInt64, to out: any ContainerStorage, at cursor: Int64
    ) throws -> (Int64, StreamHeader, [UInt8]) {
        let (_, oldHeader) = try streamHeader(entry)
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
        return (headerOffset + Int64(StreamHeader.count) + Int64(header.sealedLength), header, digest)
    }
}
