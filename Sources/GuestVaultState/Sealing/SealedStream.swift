import Dispatch
import FoundationEssentials
import GuestVaultCore
import GuestVaultCrypto
import Synchronization

/// Sealed streams: an entry of any size as fixed-size chunks, each its own AES-256-GCM
/// message under the stream's key, with its index and a last-chunk flag in the
/// associated data. Memory stays at a few chunks per core whatever the size; chunks are
/// sealed and opened in parallel; any chunk can be read alone. See docs/FORMAT.md §4.
///
/// On disk, after the ``StreamHeader``: chunk i is its ciphertext (chunk size bytes,
/// the last one shorter, possibly empty) then its 16-byte tag. Nonce of chunk i:
/// 4 zero bytes || i as u64.
enum SealedStream {
    static func nonce(_ index: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: 12)
        w.u32(0)
        w.u64(index)
        return w.bytes
    }

    /// How many chunks are processed at once: two per core.
    static var batchChunks: Int { max(2, ProcessInfo.processInfo.activeProcessorCount * 2) }

    /// How many chunks one parallel batch holds with `threads` threads: sixteen per
    /// thread (4 MiB of 256 KiB chunks), at most 64 chunks (16 MiB) unless there are more
    /// than 32 threads (then two per thread). Each batch wakes the worker threads and
    /// waits for the slowest: at two chunks per thread that cost a third of the two-core
    /// throughput on the reference machine, at sixteen it costs 2-3% (docs/PERFORMANCE.md).
    static func batch(threads: Int) -> Int {
        let threads = max(1, threads)
        return min(threads * 16, max(64, threads * 2))
    }

    /// A chunk buffer owned by one worker at a time: reused for the whole stream so that
    /// sealing a GiB allocates (and page-faults) a few MiB, not a GiB.
    final class ChunkBuffer: @unchecked Sendable {
        var bytes: [UInt8]
        var count = 0
        init(capacity: Int) { bytes = [UInt8](repeating: 0, count: capacity + AESGCM.tagByteCount) }
    }

    /// Seals everything `source` yields (it fills the buffer it is given from the start
    /// and returns the count, 0 at the end) into `file` starting at `offset` (just after
    /// where the header goes). Returns the header and the digest of the chunk tags.
    static func seal(
        from source: (inout [UInt8]) throws -> Int, into storage: any ContainerStorage, at offset: Int64,
        keys: EntryKeys, binding: EntryBinding, chunkSize: Int = ContainerFormat.chunkSize,
        threads: Int = ProcessInfo.processInfo.activeProcessorCount,
        progress: ((UInt64) -> Void)? = nil
    ) throws -> (header: StreamHeader, digest: [UInt8]) {
        let salt = try SecureRandom.bytes(count: 16)
        let key = try keys.entryKey(salt: salt)
        var tags = try SHA256()
        var index: UInt64 = 0
        var total: UInt64 = 0
        var writeOffset = offset
        let batch = Self.batch(threads: threads)
        var slots = (0..<batch).map { _ in ChunkBuffer(capacity: chunkSize) }
        var ahead = ChunkBuffer(capacity: chunkSize)
        var piece = [UInt8](repeating: 0, count: chunkSize)

        func fill(_ box: ChunkBuffer) throws {
            box.count = 0
            while box.count < chunkSize {
                let wanted = chunkSize - box.count
                if piece.count != wanted { piece = [UInt8](repeating: 0, count: wanted) }
                let n = try source(&piece)
                if n == 0 { break }
                precondition(n <= wanted, "a stream source returned more bytes than asked for")
                box.bytes.replaceSubrange(box.count..<(box.count + n), with: piece[0..<n])
                box.count += n
            }
        }

        // One chunk is read ahead, so the last chunk is known before it is sealed.
        try fill(ahead)
        var finished = false
        while !finished {
            var used = 0
            var lastFlags: [Bool] = []
            while used < batch && !finished {
                swap(&slots[used], &ahead)
                let current = slots[used]
                var isLast = current.count < chunkSize
                if !isLast {
                    try fill(ahead)
                    isLast = ahead.count == 0
                }
                lastFlags.append(isLast)
                finished = isLast
                used += 1
            }
            try sealInPlace(Array(slots[0..<used]), lastFlags: lastFlags, firstIndex: index, key: key, binding: binding, threads: threads)
            for box in slots[0..<used] {
                let sealedCount = box.count + AESGCM.tagByteCount
                do {
                    try storage.write(box.bytes[0..<sealedCount], at: writeOffset)
                } catch {
                    throw ContainerError.io(error, subject: storage.name, "could not write entry \(binding.name)")
                }
                try tags.update(Array(box.bytes[box.count..<sealedCount]))
                writeOffset += Int64(sealedCount)
                total += UInt64(box.count)
            }
            index += UInt64(used)
            progress?(total)
        }
        let header = StreamHeader(salt: salt, chunkSize: UInt32(chunkSize), length: total, chunkCount: index)
        return (header, Array(try tags.finalize().prefix(16)))
    }

    /// Seals each buffer's first `count` bytes in place, the tag after them, in parallel.
    static func sealInPlace(
        _ boxes: [ChunkBuffer], lastFlags: [Bool], firstIndex: UInt64, key: SecretBytes, binding: EntryBinding, threads: Int
    ) throws {
        try forEachInParallel(boxes.count, threads: threads) { i in
            let context = try AESGCMContext(key: key)
            let index = firstIndex + UInt64(i)
            let box = boxes[i]
            try context.seal(prefixOf: &box.bytes, count: box.count, nonce: nonce(index),
                             authenticating: binding.chunkAAD(index: index, last: lastFlags[i]))
        }
    }

    /// Opens each buffer in place (its first `count` bytes, the tag after them), in
    /// parallel. Chunk `i` has index `firstIndex + i`; the one at `total - 1` is last.
    static func openInPlace(
        _ boxes: [ChunkBuffer], firstIndex: UInt64, total: UInt64, key: SecretBytes, binding: EntryBinding, threads: Int
    ) throws {
        try forEachInParallel(boxes.count, threads: threads) { i in
            let context = try AESGCMContext(key: key)
            let index = firstIndex + UInt64(i)
            let box = boxes[i]
            do {
                try context.open(prefixOf: &box.bytes, count: box.count, nonce: nonce(index),
                                 authenticating: binding.chunkAAD(index: index, last: index == total - 1))
            } catch let error as CryptoError where error.code == .authenticationFailure {
                throw ContainerError(.authenticationFailed, subject: "entry \(binding.name) chunk \(index)",
                                     reason: "does not authenticate: changed, reordered, cut short or spliced from another stream",
                                     underlying: error)
            }
        }
    }

    /// Runs `body` for 0..<count, on all `threads` at once when more than one; throws the
    /// first error any of them threw.
    static func forEachInParallel(_ count: Int, threads: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
        let failure = Mutex<(any Error)?>(nil)
        let work: @Sendable (Int) -> Void = { i in
            do { try body(i) } catch { failure.withLock { $0 = $0 ?? error } }
        }
        if threads <= 1 || count == 1 {
            for i in 0..<count { work(i) }
        } else {
            DispatchQueue.concurrentPerform(iterations: count, execute: work)
        }
        if let error = failure.withLock({ $0 }) { throw error }
    }

    /// Opens the whole stream whose header is at `headerOffset`, handing plaintext
    /// chunks to `sink` in order. The sink sees a chunk only after its tag verified;
    /// the caller must not treat the data as complete until this returns (the digest of
    /// all tags and the last-chunk flag are checked at the end).
    static func open(
        storage: any ContainerStorage, headerOffset: Int64, header: StreamHeader, keys: EntryKeys, binding: EntryBinding,
        expectedDigest: [UInt8], threads: Int = ProcessInfo.processInfo.activeProcessorCount,
        sink: ([UInt8]) throws -> Void
    ) throws {
        let key = try keys.entryKey(salt: header.salt)
        let chunkSize = Int(header.chunkSize)
        var tags = try SHA256()
        var index: UInt64 = 0
        let batch = Self.batch(threads: threads)
        // The chunk size comes from the file: size the buffers by what the stream can
        // hold, not by what its header claims.
        let boxes = (0..<Int(min(UInt64(batch), header.chunkCount))).map { _ in
            ChunkBuffer(capacity: Int(min(UInt64(chunkSize), max(header.length, 1))))
        }
        while index < header.chunkCount {
            let count = Int(min(UInt64(batch), header.chunkCount - index))
            for i in 0..<count {
                let box = boxes[i]
                box.count = header.plainCount(index: index + UInt64(i))
                let sealedCount = box.count + AESGCM.tagByteCount
                let at = try LogScan.checked { () throws(Checked.Overflow) -> Int64 in
                    try Checked.add(headerOffset, try header.chunkOffset(index: index + UInt64(i)), "chunk offset")
                }
                let n: Int
                do {
                    n = try storage.read(into: &box.bytes, bufferOffset: 0, at: at, count: sealedCount)
                } catch {
                    throw ContainerError.io(error, subject: storage.name, "cannot read entry \(binding.name)")
                }
                guard n == sealedCount else {
                    throw ContainerError(.truncated, subject: "entry \(binding.name)", reason: "the stream ends inside chunk \(index + UInt64(i))")
                }
                try tags.update(Array(box.bytes[box.count..<sealedCount]))
            }
            try openInPlace(Array(boxes[0..<count]), firstIndex: index, total: header.chunkCount, key: key, binding: binding, threads: threads)
            for box in boxes[0..<count] { try sink(Array(box.bytes[0..<box.count])) }
            index += UInt64(count)
        }
        guard constantTimeEquals(Array(try tags.finalize().prefix(16)), expectedDigest) else {
            throw ContainerError(.authenticationFailed, subject: "entry \(binding.name)", reason: "the stream's chunks are not the ones the commit names")
        }
    }

    static func openChunk(_ sealed: [UInt8], index: UInt64, last: Bool, key: SecretBytes, binding: EntryBinding) throws -> [UInt8] {
        let context = try AESGCMContext(key: key)
        var buffer = Array(sealed.dropLast(AESGCM.tagByteCount))
        do {
            try context.open(inPlace: &buffer, tag: Array(sealed.suffix(AESGCM.tagByteCount)), nonce: nonce(index),
                             authenticating: binding.chunkAAD(index: index, last: last))
        } catch let error as CryptoError where error.code == .authenticationFailure {
            throw ContainerError(.authenticationFailed, subject: "entry \(binding.name) chunk \(index)",
                                 reason: "does not authenticate: changed, reordered, cut short or spliced from another stream",
                                     underlying: error)
        }
        return buffer
    }
}
