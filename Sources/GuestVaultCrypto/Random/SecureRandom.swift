internal import CLibCrypto

/// The CSPRNG: OpenSSL's `RAND_bytes`, seeded by the operating system. A failure is an
/// error, never a silent fallback to a weaker source.
public enum SecureRandom {
    /// `count` random bytes.
    public static func bytes(count: Int) throws -> [UInt8] {
        guard count >= 0 else {
            throw CryptoError(.invalidOutputLength, operation: "random bytes", reason: "negative count \(count)")
        }
        var out = [UInt8](repeating: 0, count: count)
        if count > 0 {
            try out.withUnsafeMutableBytes { (buffer) in try fill(buffer) }
        }
        return out
    }

    /// Fills `buffer` with random bytes.
    static func fill(_ buffer: UnsafeMutableRawBufferPointer) throws {
        var offset = 0
        while offset < buffer.count {
            let step = min(buffer.count - offset, 1 << 30)
            let result = RAND_bytes(buffer.baseAddress!.advanced(by: offset).assumingMemoryBound(to: UInt8.self), Int32(step))
            if result != 1 {
                throw OpenSSL.error(.randomFailure, "random bytes", "RAND_bytes failed for \(step) bytes")
            }
            offset += step
        }
    }

    /// A random 64-bit value (identifiers, not keys).
    public static func uint64() throws -> UInt64 {
        let raw = try bytes(count: 8)
        return raw.reduce(0) { ($0 << 8) | UInt64($1) }
    }
}
