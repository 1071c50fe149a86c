import GuestVaultCrypto
import GuestVaultSystem

/// Reads a container's log from the start and finds the last complete commit, without
/// keys. Every record is checked (its SHA-256 check); the log ends at the first record
/// that is incomplete or does not check, or at a commit that does not continue the
/// chain (generation + 1, previous offset). See docs/FORMAT.md §6.
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
    /// Bytes of records no commit still names.
    var liveBytes: Int64

    static func scan(_ file: OpenFile) throws -> LogScan {
        let path = file.path
        let size: Int64
        do { size = try file.size() } catch { throw ContainerError(.io, subject: path, reason: "\(error)") }
        let head = try read(file, 0, Int(min(size, ContainerFormat.logStart)))
        let superblock = try Superblock.parse(head, path: path)
        guard size >= ContainerFormat.logStart else {
            throw ContainerError(.truncated, subject: path, reason: "the file is \(size) bytes, it ends inside the header area")
        }
        if let bad = head[Superblock.count...].firstIndex(where: { $0 != 0 }) {
            throw ContainerError(.malformed, subject: "\(path) at byte \(bad)", reason: "the header padding must be zero")
        }

        var offset = ContainerFormat.logStart
        var records: [Int64: RecordHeader] = [:]
        var last: (manifest: Manifest, offset: Int64, prefix: [UInt8])?
        scanning: while offset + Int64(RecordHeader.count) <= size {
            let headerBytes = try read(file, offset, RecordHeader.count)
            guard let header = RecordHeader.parse(headerBytes) else { break scanning }
            let bodyStart = offset + Int64(RecordHeader.count)
            guard header.bodyLength <= UInt64(size - bodyStart) else { break scanning }
            let end = bodyStart + Int64(header.bodyLength)
            switch header.kind {
            case .blob:
                guard header.bodyLength >= 16, header.bodyLength <= UInt64(ContainerFormat.maximumBlobSize + 16) else { break scanning }
                guard try header.verifies(checkedBody: read(file, bodyStart, Int(header.bodyLength))) else { break scanning }
            case .stream:
                guard header.bodyLength >= UInt64(StreamHeader.count) else { break scanning }
                let streamBytes = try read(file, bodyStart, StreamHeader.count)
                guard try header.verifies(checkedBody: streamBytes) else { break scanning }
                let stream = try StreamHeader.parse(streamBytes, subject: "\(path) at byte \(bodyStart)")
                guard UInt64(StreamHeader.count) + stream.sealedLength == header.bodyLength else {
                    throw ContainerError(.malformed, subject: "\(path) at byte \(offset)", reason: "stream record length does not match its header")
                }
            case .commit:
                guard header.bodyLength <= UInt64(ContainerFormat.maximumCommitSize) else { break scanning }
                let body = try read(file, bodyStart, Int(header.bodyLength))
                guard try header.verifies(checkedBody: body) else { break scanning }
                let manifest = try Manifest.parse(body, base: bodyStart, subject: path)
                if let previous = last {
                    // A commit that does not continue the chain is left over from an
                    // earlier append that was cut short: the log ends before it.
                    guard manifest.generation == previous.manifest.generation + 1, manifest.previousCommit == previous.offset else { break scanning }
                } else {
                    guard manifest.previousCommit == 0 else { break scanning }
                }
                for entry in manifest.entries {
                    guard let record = records[entry.recordOffset] else {
                        throw ContainerError(.malformed, subject: "\(path) at byte \(offset)",
                                             reason: "commit \(manifest.generation) names entry \"\(entry.name)\" at byte \(entry.recordOffset), where no record starts")
                    }
                    let matches: Bool
                    switch (entry.kind, record.kind) {
                    case (.blob, .blob): matches = record.bodyLength == entry.size + 16
                    case (.stream, .stream): matches = true
                    default: matches = false
                    }
                    guard matches else {
                        throw ContainerError(.malformed, subject: "\(path) at byte \(offset)",
                                             reason: "entry \"\(entry.name)\" does not match the record at byte \(entry.recordOffset)")
                    }
                }
                last = (manifest, offset, Array(headerBytes[0..<16]))
            }
            records[offset] = header
            offset = end
        }
        guard let last else {
            throw ContainerError(.truncated, subject: path, reason: "no complete commit in the file: it was cut short or damaged before its first commit")
        }
        var logEnd = last.offset + Int64(RecordHeader.count) + Int64(records[last.offset]!.bodyLength)
        // Records after the last commit are an append that never committed: not part of
        // the log. The bytes after it must be zero, or begin with such a record.
        var hasTail = false
        if logEnd < size {
            let probe = try read(file, logEnd, Int(min(size - logEnd, Int64(RecordHeader.magic.count))))
            if probe.starts(with: RecordHeader.magic) {
                hasTail = true
            } else {
                // Only preallocated zeros may follow.
                let bad: Int64?
                do { bad = try file.firstNonZeroByte(at: logEnd, count: size - logEnd) } catch {
                    throw ContainerError(.io, subject: path, reason: "\(error)")
                }
                if let bad {
                    throw ContainerError(.malformed, subject: "\(path) at byte \(bad)",
                                         reason: "unexpected bytes after the last commit (the file was changed)")
                }
            }
        }
        if logEnd > size { logEnd = size }
        var live: Int64 = Int64(RecordHeader.count) + Int64(records[last.offset]!.bodyLength)
        for entry in last.manifest.entries {
            live += Int64(RecordHeader.count) + Int64(records[entry.recordOffset]!.bodyLength)
        }
        return LogScan(superblock: superblock, superblockBytes: Array(head[0..<Superblock.count]), manifest: last.manifest,
                       commitOffset: last.offset, commitHeaderPrefix: last.prefix, logEnd: logEnd, fileSize: size,
                       hasTail: hasTail, liveBytes: live)
    }

    static func read(_ file: OpenFile, _ offset: Int64, _ count: Int) throws -> [UInt8] {
        do {
            return try file.read(at: offset, count: count)
        } catch {
            throw ContainerError(.io, subject: file.path, reason: "\(error)")
        }
    }
}
