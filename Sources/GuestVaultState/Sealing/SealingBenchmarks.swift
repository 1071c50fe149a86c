import Dispatch
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import GuestVaultCrypto

/// Measurements behind `guestvault benchmark`, in memory, through the same code paths
/// the container uses (entry keys, AAD, chunking, parallel sealing). Not library API:
/// callers `@_spi(Benchmarking) import GuestVaultState` (the CLI's `benchmark`, Benchmarks/).
@_spi(Benchmarking) public enum SealingBenchmarks {
    public struct Rate: Sendable, Codable {
        public let operations: Int
        public let bytes: Int
        public let seconds: Double
        /// CPU seconds the process spent meanwhile (user + system, all threads).
        public var cpuSeconds: Double = 0
        public var perSecond: Double { Double(operations) / seconds }
        public var bytesPerSecond: Double { Double(bytes) / seconds }
    }

    static func measure(for duration: Double, bytesPerOperation: Int, _ body: () throws -> Int) rethrows -> Rate {
        let start = DispatchTime.now().uptimeNanoseconds
        var operations = 0
        var elapsed = 0.0
        repeat {
            operations += try body()
            elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        } while elapsed < duration
        return Rate(operations: operations, bytes: operations * bytesPerOperation, seconds: elapsed)
    }

    /// User + system CPU seconds of this process so far.
    public static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }

    static func binding(_ name: String) -> EntryBinding {
        EntryBinding(vm: UUID(), containerID: [UInt8](repeating: 7, count: 16), name: name, generation: 2)
    }

    /// Blob sealing (entry key derivation, AES-256-GCM, AAD) of `size` bytes.
    public static func blobSeal(size: Int, seconds: Double) throws -> Rate {
        let keys = try EntryKeys(dek: SecretBytes(randomCount: 32), containerID: [UInt8](repeating: 7, count: 16))
        let salt = try SecureRandom.bytes(count: 16)
        let plaintext = [UInt8](repeating: 0x42, count: size)
        let b = binding("tpm.permanent")
        return try measure(for: seconds, bytesPerOperation: size) {
            for _ in 0..<16 { _ = try SealedBlob.seal(plaintext, keys: keys, salt: salt, binding: b) }
            return 16
        }
    }

    /// Blob opening of `size` bytes.
    public static func blobOpen(size: Int, seconds: Double) throws -> Rate {
        let keys = try EntryKeys(dek: SecretBytes(randomCount: 32), containerID: [UInt8](repeating: 7, count: 16))
        let salt = try SecureRandom.bytes(count: 16)
        let b = binding("tpm.permanent")
        let (body, tag) = try SealedBlob.seal([UInt8](repeating: 0x42, count: size), keys: keys, salt: salt, binding: b)
        return try measure(for: seconds, bytesPerOperation: size) {
            for _ in 0..<16 { _ = try SealedBlob.open(body, keys: keys, salt: salt, binding: b, expectedTag: tag) }
            return 16
        }
    }

    /// Sealing `total` bytes as 256 KiB stream chunks on `threads` threads (no disk), with
    /// the buffers the container's stream writer reuses.
    public static func streamSeal(total: Int, threads: Int) throws -> Rate {
        let keys = try EntryKeys(dek: SecretBytes(randomCount: 32), containerID: [UInt8](repeating: 7, count: 16))
        let key = try keys.entryKey(salt: SecureRandom.bytes(count: 16))
        let chunk = ContainerFormat.chunkSize
        let batch = SealedStream.batch(threads: threads)
        let boxes = (0..<batch).map { _ in SealedStream.ChunkBuffer(capacity: chunk) }
        let b = binding("vm.runtime")
        let count = max(1, total / chunk)
        let cpu = processCPUSeconds()
        let start = DispatchTime.now().uptimeNanoseconds
        var done = 0
        while done < count {
            let n = min(batch, count - done)
            for box in boxes { box.count = chunk }
            try SealedStream.sealInPlace(Array(boxes[0..<n]), lastFlags: [Bool](repeating: false, count: n), firstIndex: UInt64(done),
                                         key: key, binding: b, threads: threads)
            done += n
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return Rate(operations: count, bytes: count * chunk, seconds: seconds, cpuSeconds: processCPUSeconds() - cpu)
    }

    /// Opening `total` bytes of 256 KiB stream chunks on `threads` threads (no disk). Each
    /// round re-seals the buffers outside the timed part (opening decrypts in place).
    public static func streamOpen(total: Int, threads: Int) throws -> Rate {
        let keys = try EntryKeys(dek: SecretBytes(randomCount: 32), containerID: [UInt8](repeating: 7, count: 16))
        let key = try keys.entryKey(salt: SecureRandom.bytes(count: 16))
        let chunk = ContainerFormat.chunkSize
        let batch = SealedStream.batch(threads: threads)
        let boxes = (0..<batch).map { _ in SealedStream.ChunkBuffer(capacity: chunk) }
        let b = binding("vm.runtime")
        let count = max(1, total / chunk)
        var elapsed: UInt64 = 0
        var cpu = 0.0
        var done = 0
        while done < count {
            let n = min(batch, count - done)
            for box in boxes { box.count = chunk }
            try SealedStream.sealInPlace(Array(boxes[0..<n]), lastFlags: [Bool](repeating: false, count: n), firstIndex: 0,
                                         key: key, binding: b, threads: threads)
            let cpu0 = processCPUSeconds()
            let start = DispatchTime.now().uptimeNanoseconds
            try SealedStream.openInPlace(Array(boxes[0..<n]), firstIndex: 0, total: UInt64(batch) + 1, key: key, binding: b, threads: threads)
            elapsed += DispatchTime.now().uptimeNanoseconds - start
            cpu += processCPUSeconds() - cpu0
            done += n
        }
        return Rate(operations: count, bytes: count * chunk, seconds: Double(elapsed) / 1e9, cpuSeconds: cpu)
    }
}
