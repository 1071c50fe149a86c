import GuestVaultCore

/// Reads a container's log from the start and finds the last complete commit, without
/// keys. Every record is checked (its SHA-256 check); the log ends at the first record
/// that is incomplete or does not check, or at a commit that does not continue the
/// chain (generation + 1, previous offset). A record is framing until a commit names
/// it: a stream record's header is parsed and checked when a commit names the stream,
/// so a stream that never committed is ignored like any other unfinished append. See
/// docs/FORMAT.md §6. No arithmetic on a number from the file can trap.
struct LogScan {
    var superblock: Superblock
    var superblockBytes: [UInt8]
    var manifest: Manifest
    var commitOffset: Int64
    var commitHeaderPrefix: [UInt8]
    /// Where the next record goes.
    var logEnd: Int64
    var fileSize: Int64
    /// Whether non-zero bytes follow the log (a torn or abandoned append).
    var hasTail: Bool
    /// Bytes of the records the last commit names, itself included.
    var liveBytes: Int64
    /// Body lengths of the records the last commit names, by offset.
    var recordLengths: [Int64: UInt64]

    static func scan(_ storage: any ContainerStorage) throws -> LogScan {
        let subject = storage.name
        let size: Int64
        do { size = try storage.size() } catch { throw ContainerError.io(error, subject: subject, "cannot read the container") }
        let head = try read(storage, 0, Int(min(size, ContainerFormat.logStart)))
        let superblock = try Superblock.parse(head, subject: subject)
        guard size >= ContainerFormat.logStart else {
            throw ContainerError(.truncated, subject: subject, reason: "the file is \(size) bytes, it ends inside the header area")
        }
        if let bad = head[Superblock.count...].firstIndex(where: { $0 != 0 }) {
            throw ContainerError(.malformed, subject: "\(subject) at byte \(bad)", reason: "the header padding must be zero")
        }

        var offset = ContainerFormat.logStart
        var records: [Int64: RecordHeader] = [:]
        var streams: [Int64: StreamHeader] = [:]
        var last: (manifest: Manifest, offset: Int64, prefix: [UInt8])?
        // Every offset below is at most `size`, and every length was compared with what
        // remains before it is added, so the sums stay in range.
        scanning: while size - offset >= Int64(RecordHeader.count) {
            let headerBytes = try read(storage, offset, RecordHeader.count)
            guard let header = RecordHeader.parse(headerBytes) else { break scanning }
            let bodyStart = offset + Int64(RecordHeader.count)
            guard header.bodyLength <= UInt64(size - bodyStart) else { break scanning }
            let end = bodyStart + Int64(header.bodyLength)
            switch header.kind {
            case .blob:
                guard header.bodyLength >= 16, header.bodyLength <= UInt64(ContainerFormat.maximumBlobSize + 16) else { break scanning }
                guard try header.verifies(checkedBody: read(storage, bodyStart, Int(header.bodyLength))) else { break scanning }
            case .stream:
                guard header.bodyLength >= UInt64(StreamHeader.count) else { break scanning }
                guard try header.verifies(checkedBody: read(storage, bodyStart, StreamHeader.count)) else { break scanning }
            case .commit:
                guard header.bodyLength <= UInt64(ContainerFormat.maximumCommitSize) else { break scanning }
                let body = try read(storage, bodyStart, Int(header.bodyLength))
                guard try header.verifies(checkedBody: body) else { break scanning }
                let manifest = try Manifest.parse(body, base: bodyStart, subject: subject)
                if let previous = last {
                    // A commit that does not continue the chain is left over from an
                    // earlier append that was cut short: the log ends before it. After
                    // the last generation (2^64 - 1) nothing continues the chain.
                    guard previous.manifest.generation < UInt64.max, manifest.generation == previous.manifest.generation + 1,
                          manifest.previousCommit == previous.offset else { break scanning }
                } else {
                    guard manifest.previousCommit == 0 else { break scanning }
                }
                for entry in manifest.entries {
                    try checkNamedRecord(entry, records: records, streams: &streams, storage: storage, commitOffset: offset,
                                         generation: manifest.generation)
                }
                last = (manifest, offset, Array(headerBytes[0..<16]))
            }
            records[offset] = header
            offset = end
        }
        guard let last, let commitRecord = records[last.offset] else {
            throw ContainerError(.truncated, subject: subject, reason: "no complete commit in the file: it was cut short or damaged before its first commit")
        }
        let logEnd = last.offset + Int64(RecordHeader.count) + Int64(commitRecord.bodyLength)
        // Records after the last commit are an append that never committed: not part of
        // the log. The bytes after it must be zero, or begin with such a record.
        var hasTail = false
        if logEnd < size {
            let probe = try read(storage, logEnd, Int(min(size - logEnd, Int64(RecordHeader.magic.count))))
            if probe.starts(with: RecordHeader.magic) {
                hasTail = true
            } else {
                // Only preallocated zeros may follow.
                let bad: Int64?
                do { bad = try storage.firstNonZeroByte(at: logEnd, count: size - logEnd) } catch {
                    throw ContainerError.io(error, subject: subject, "cannot read the container")
                }
                if let bad {
                    throw ContainerError(.malformed, subject: "\(subject) at byte \(bad)",
                                         reason: "unexpected bytes after the last commit (the file was changed)")
                }
            }
        }
        // Each named record lies inside the file, at its own offset: the sum is below
        // the file's size times the number of entries (at most 1024 + 1).
        var live = Int64(RecordHeader.count) + Int64(commitRecord.bodyLength)
        var lengths: [Int64: UInt64] = [:]
        for entry in last.manifest.entries {
            guard let record = records[entry.recordOffset] else { continue }
            lengths[entry.recordOffset] = record.bodyLength
            live = try checked { () throws(Checked.Overflow) -> Int64 in try Checked.add(live, Int64(RecordHeader.count) + Int64(record.bodyLength), "live bytes") }
        }
        return LogScan(superblock: superblock, superblockBytes: Array(head[0..<Superblock.count]), manifest: last.manifest,
                       commitOffset: last.offset, commitHeaderPrefix: last.prefix, logEnd: logEnd, fileSize: size,
                       hasTail: hasTail, liveBytes: live, recordLengths: lengths)
    }

    /// An entry a commit names must point at a record of its kind that holds it: a blob
    /// record of size + 16 bytes, or a stream record whose header parses, has the
    /// entry's length, and fills the record exactly.
    private static func checkNamedRecord(
        _ entry: EntryRecord, records: [Int64: RecordHeader], streams: inout [Int64: StreamHeader],
        storage: any ContainerStorage, commitOffset: Int64, generation: UInt64
    ) throws {
        let subject = "\(storage.name) at byte \(commitOffset)"
        guard let record = records[entry.recordOffset] else {
            throw ContainerError(.malformed, subject: subject,
                                 reason: "commit \(generation) names entry \"\(entry.name)\" at byte \(entry.recordOffset), where no record starts")
        }
        let matches: Bool
        switch (entry.kind, record.kind) {
        case (.blob, .blob):
            matches = record.bodyLength == entry.size + 16
        case (.stream, .stream):
            let stream: StreamHeader
            if let known = streams[entry.recordOffset] {
                stream = known
            } else {
                let headerOffset = entry.recordOffset + Int64(RecordHeader.count)
                stream = try StreamHeader.parse(read(storage, headerOffset, StreamHeader.count), base: headerOffset,
                                                subject: storage.name)
                streams[entry.recordOffset] = stream
            }
            guard UInt64(StreamHeader.count) + stream.sealedLength == record.bodyLength else {
                throw ContainerError(.malformed, subject: "\(storage.name) at byte \(entry.recordOffset)",
                                     reason: "the stream record's length does not match its header")
            }
            matches = stream.length == entry.size
        default:
            matches = false
        }
        guard matches else {
            throw ContainerError(.malformed, subject: subject,
                                 reason: "entry \"\(entry.name)\" does not match the record at byte \(entry.recordOffset)")
        }
    }

    static func read(_ storage: any ContainerStorage, _ offset: Int64, _ count: Int) throws -> [UInt8] {
        do {
            return try storage.read(at: offset, count: count)
        } catch {
            throw ContainerError.io(error, subject: storage.name, "cannot read \(count) bytes at byte \(offset)")
        }
    }

    /// Runs checked arithmetic on numbers from the file: an overflow is a malformed file.
    static func checked<T>(_ body: () throws(Checked.Overflow) -> T) throws -> T {
        do {
            return try body()
        } catch {
            throw ContainerError(.malformed, subject: "container", reason: "a value of the file is out of range", underlying: error)
        }
    }
}
