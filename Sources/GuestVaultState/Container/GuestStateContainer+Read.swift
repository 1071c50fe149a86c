import GuestVaultCore
import GuestVaultCrypto

extension GuestStateContainer {
    /// Reads a committed entry. Streams larger than the blob limit must be read with
    /// ``readStream(_:to:)``.
    public func read(_ name: String) throws -> [UInt8] {
        let keys = try unlockedKeys()
        let entry = try committedEntry(name)
        switch entry.kind {
        case .blob:
            // The scan checked that the blob record holds size + 16 bytes (size ≤ 64 MiB).
            let count = Int(entry.size) + AESGCM.tagByteCount
            let body = try LogScan.read(storage, entry.recordOffset + Int64(RecordHeader.count), count)
            guard body.count == count else {
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
            let (headerOffset, header) = try streamHeader(entry)
            try SealedStream.open(storage: storage, headerOffset: headerOffset, header: header, keys: keys, binding: binding(entry),
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
        let (headerOffset, header) = try streamHeader(entry)
        guard index < header.chunkCount else {
            throw ContainerError(.limit, subject: "\(path) entry \(name)", reason: "there is no chunk \(index) (\(header.chunkCount) chunks)")
        }
        let plain = header.plainCount(index: index)
        let at = try LogScan.checked { () throws(Checked.Overflow) -> Int64 in
            try Checked.add(headerOffset, try header.chunkOffset(index: index), "chunk offset")
        }
        let raw = try LogScan.read(storage, at, plain + AESGCM.tagByteCount)
        guard raw.count == plain + AESGCM.tagByteCount else {
            throw ContainerError(.truncated, subject: "\(path) entry \(name)", reason: "the stream ends inside chunk \(index)")
        }
        return try SealedStream.openChunk(raw, index: index, last: index == header.chunkCount - 1,
                                          key: keys.entryKey(salt: header.salt), binding: binding(entry))
    }

    /// The stream header of a committed stream entry, checked against what the commit
    /// says (salt and length).
    func streamHeader(_ entry: EntryRecord) throws -> (offset: Int64, header: StreamHeader) {
        let headerOffset = entry.recordOffset + Int64(RecordHeader.count)
        let header = try StreamHeader.parse(LogScan.read(storage, headerOffset, StreamHeader.count), base: headerOffset,
                                            subject: "\(path) entry \(entry.name)")
        guard header.salt == entry.salt, header.length == entry.size else {
            throw ContainerError(.authenticationFailed, subject: "\(path) entry \(entry.name)", reason: "the stream record is not the one the commit names")
        }
        return (headerOffset, header)
    }
}
