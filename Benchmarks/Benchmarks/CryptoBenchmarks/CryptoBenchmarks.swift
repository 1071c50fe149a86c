import Benchmark
@_spi(Benchmarking) import GuestVaultCrypto

/// Bytes per second, recorded by the benchmark body itself (package-benchmark's
/// throughput metric counts iterations, not bytes).
private let bytesPerSecond = BenchmarkMetric.custom("MB/s (1e6 bytes)", polarity: .prefersLarger, useScalingFactor: false)

private func sizeName(_ size: Int) -> String {
    size >= 1 << 20 ? "\(size >> 20) MiB" : "\(size >> 10) KiB"
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 3,
        maxDuration: .seconds(2),
        maxIterations: 100_000
    )

    // MARK: AES-256-GCM seal and open, reusable context, in place.
    for size in [1 << 10, 64 << 10, 1 << 20, 64 << 20] {
        let iterations = max(1, (8 << 20) / size)
        let config = Benchmark.Configuration(
            metrics: [.wallClock, bytesPerSecond, .mallocCountTotal],
            warmupIterations: 1, scalingFactor: .one,
            maxDuration: .seconds(3), maxIterations: size >= 64 << 20 ? 40 : 2_000
        )
        Benchmark("AES-256-GCM seal \(sizeName(size))", configuration: config) { benchmark in
            let context = try AESGCMContext(key: SecretBytes(randomCount: 32))
            let nonce = try SecureRandom.bytes(count: 12)
            let aad = [UInt8](repeating: 7, count: 64)
            var buffer = [UInt8](repeating: 0x42, count: size)
            let clock = ContinuousClock()
            benchmark.startMeasurement()
            let start = clock.now
            for _ in 0..<iterations {
                blackHole(try context.seal(inPlace: &buffer, nonce: nonce, authenticating: aad))
            }
            let elapsed = clock.now - start
            benchmark.stopMeasurement()
            benchmark.measurement(bytesPerSecond, rate(bytes: size * iterations, elapsed))
        }
        Benchmark("AES-256-GCM open \(sizeName(size))", configuration: config) { benchmark in
            let context = try AESGCMContext(key: SecretBytes(randomCount: 32))
            let nonce = try SecureRandom.bytes(count: 12)
            let aad = [UInt8](repeating: 7, count: 64)
            let plaintext = [UInt8](repeating: 0x42, count: size)
            var sealed = plaintext
            let tag = try context.seal(inPlace: &sealed, nonce: nonce, authenticating: aad)
            var buffer = sealed
            let clock = ContinuousClock()
            var elapsed = Duration.zero
            benchmark.startMeasurement()
            for _ in 0..<iterations {
                // Refill the ciphertext outside the timed region: open decrypts in place.
                buffer.withUnsafeMutableBufferPointer { b in
                    sealed.withUnsafeBufferPointer { s in b.baseAddress!.update(from: s.baseAddress!, count: s.count) }
                }
                let start = clock.now
                try context.open(inPlace: &buffer, tag: tag, nonce: nonce, authenticating: aad)
                elapsed += clock.now - start
            }
            benchmark.stopMeasurement()
            benchmark.measurement(bytesPerSecond, rate(bytes: size * iterations, elapsed))
        }
    }

    // MARK: 1 KiB seal: wrapper against the bare EVP calls, per operation.
    let small = Benchmark.Configuration(metrics: [.wallClock, .throughput, .mallocCountTotal, .instructions],
                                        warmupIterations: 1000, scalingFactor: .kilo, maxDuration: .seconds(2))
    Benchmark("1 KiB seal, AESGCMContext", configuration: small) { benchmark in
        let context = try AESGCMContext(key: SecretBytes(randomCount: 32))
        let nonce = try SecureRandom.bytes(count: 12)
        let aad = [UInt8](repeating: 7, count: 64)
        var buffer = [UInt8](repeating: 0x42, count: 1024)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try context.seal(inPlace: &buffer, nonce: nonce, authenticating: aad))
        }
    }
    Benchmark("1 KiB seal, raw EVP calls", configuration: small) { benchmark in
        let raw = try RawEVPBaseline(key: SecretBytes(randomCount: 32))
        let nonce = try SecureRandom.bytes(count: 12)
        let aad = [UInt8](repeating: 7, count: 64)
        var buffer = [UInt8](repeating: 0x42, count: 1024)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            raw.sealInPlace(&buffer, nonce: nonce, aad: aad)
        }
        blackHole(buffer)
    }

    // MARK: Key derivation.
    let kdf = Benchmark.Configuration(metrics: [.wallClock, .throughput, .mallocCountTotal],
                                      warmupIterations: 1000, scalingFactor: .kilo, maxDuration: .seconds(2))
    Benchmark("SP 800-108 KEK derivation (reused context)", configuration: kdf) { benchmark in
        let context = try KBKDFContext(key: SecretBytes(randomCount: 32))
        let label = Array("GuestVault KEK v1".utf8)
        var vm = [UInt8](repeating: 0, count: 20)
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            vm[0] = UInt8(truncatingIfNeeded: i)
            blackHole(try context.deriveKey(label: label, context: vm, outputByteCount: 32))
        }
    }
    Benchmark("SP 800-108 derivation (one-shot)", configuration: kdf) { benchmark in
        let key = try SecretBytes(randomCount: 32)
        let label = Array("GuestVault KEK v1".utf8)
        let vm = [UInt8](repeating: 1, count: 20)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try KBKDF.counterHMACSHA256(key: key, label: label, context: vm, outputByteCount: 32))
        }
    }
    Benchmark("HKDF-SHA256 derivation", configuration: kdf) { benchmark in
        let key = try SecretBytes(randomCount: 32)
        let salt = try SecureRandom.bytes(count: 32)
        let info = Array("GuestVault entry key".utf8)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try HKDF.deriveKey(inputKeyMaterial: key, salt: salt, info: info, outputByteCount: 32))
        }
    }
}

private func rate(bytes: Int, _ elapsed: Duration) -> Int {
    let (seconds, attoseconds) = elapsed.components
    let total = Double(seconds) + Double(attoseconds) / 1e18
    return total > 0 ? Int(Double(bytes) / total / 1e6) : 0
}
