internal import CLibCrypto

/// Secret bytes: keys, shared secrets, passphrases.
///
/// The bytes live in secure memory owned by this value (``SecureMemory``: excluded from
/// core dumps with MADV_DONTDUMP, locked against swap with mlock as far as the limit
/// allows). When the last copy is released the whole block is overwritten with
/// `OPENSSL_cleanse` before it is reused. The bytes never print (`description` and `debugDescription` say only how
/// many there are) and `==` compares in constant time.
public struct SecretBytes: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    final class Storage: @unchecked Sendable {
        // Written only during initialisation, read-only afterwards.
        let bytes: UnsafeMutableRawBufferPointer
        private let block: SecureMemory.Block

        init(count: Int) {
            // Kept out of core dumps and (as the memlock limit allows) out of swap.
            block = SecureMemory.allocate(count)
            bytes = block.buffer
            self.count = count
        }

        // Set once while the owning value is initialised (it may shrink there).
        var count: Int

        deinit {
            OPENSSL_cleanse(bytes.baseAddress, bytes.count)
            SecureMemory.release(block)
        }
    }

    let storage: Storage

    /// The number of secret bytes.
    public var count: Int { storage.count }

    /// Copies `bytes` into zeroed-on-release storage. The caller still owns `bytes` and
    /// should not keep secrets in ordinary arrays longer than needed.
    public init(copying bytes: some Sequence<UInt8>) {
        // Contiguous bytes (an array, a slice of one) are copied straight over; anything
        // else goes through a temporary array, which is cleansed afterwards.
        func copy(_ source: UnsafeBufferPointer<UInt8>) -> Storage {
            let storage = Storage(count: source.count)
            if let base = source.baseAddress { storage.bytes.baseAddress!.copyMemory(from: base, byteCount: source.count) }
            return storage
        }
        if let direct = bytes.withContiguousStorageIfAvailable(copy) {
            storage = direct
        } else {
            var array = Array(bytes)
            storage = array.withUnsafeBufferPointer(copy)
            array.withUnsafeMutableBytes { OPENSSL_cleanse($0.baseAddress, $0.count) }
        }
    }

    /// The bytes of `parts`, one after the other, copied from storage to storage: no
    /// ordinary array holds them on the way (key material for a KDF, say).
    public init(concatenating parts: [SecretBytes]) {
        let total = parts.reduce(0) { $0 + $1.count }
        storage = Storage(count: total)
        var offset = 0
        for part in parts {
            part.withUnsafeBytes { source in
                if let base = source.baseAddress { (storage.bytes.baseAddress! + offset).copyMemory(from: base, byteCount: source.count) }
            }
            offset += part.count
        }
    }

    /// Bytes `range` of these, in storage of their own.
    public func slice(_ range: Range<Int>) -> SecretBytes {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "a slice outside the secret")
        return SecretBytes(unsafeUninitializedCount: range.count) { target in
            withUnsafeBytes { source in
                if range.count > 0 { target.baseAddress!.copyMemory(from: source.baseAddress! + range.lowerBound, byteCount: range.count) }
            }
        }
    }

    /// Copies the bytes into `buffer` from `offset` (which must have room): for building
    /// a message in a buffer that is encrypted in place right after, so the secret does
    /// not pass through an array of its own.
    public func copy(into buffer: inout [UInt8], at offset: Int) {
        precondition(offset >= 0 && offset + count <= buffer.count, "no room for the secret")
        withUnsafeBytes { source in
            buffer.withUnsafeMutableBytes { target in
                if source.count > 0 { (target.baseAddress! + offset).copyMemory(from: source.baseAddress!, byteCount: source.count) }
            }
        }
    }

    /// `count` bytes from the CSPRNG. Throws if the generator fails; there is no fallback.
    public init(randomCount count: Int) throws {
        storage = Storage(count: count)
        if count > 0 {
            try SecureRandom.fill(UnsafeMutableRawBufferPointer(rebasing: storage.bytes[0..<count]))
        }
    }

    /// Creates secret bytes by letting `initializer` write exactly `count` bytes.
    /// For the crypto core's own use (derivations write straight into the storage).
    init(
        unsafeUninitializedCount count: Int,
        initializingWith initializer: (UnsafeMutableRawBufferPointer) throws -> Void
    ) rethrows {
        storage = Storage(count: count)
        try initializer(UnsafeMutableRawBufferPointer(rebasing: storage.bytes[0..<count]))
    }

    /// Creates secret bytes in `capacity` bytes of storage; `initializer` writes and sets
    /// the final count (at most `capacity`). The unused tail stays zero.
    init(
        unsafeUninitializedCapacity capacity: Int,
        initializingWith initializer: (UnsafeMutableRawBufferPointer, inout Int) throws -> Void
    ) rethrows {
        storage = Storage(count: capacity)
        var count = 0
        try initializer(UnsafeMutableRawBufferPointer(rebasing: storage.bytes[0..<capacity]), &count)
        precondition(count >= 0 && count <= capacity)
        storage.count = count
    }

    /// Calls `body` with the secret bytes. Do not let the pointer escape or copy the bytes
    /// into storage that is not zeroed.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(rebasing: storage.bytes[0..<storage.count]))
    }

    /// A copy of the bytes in an ordinary array, for code that must hand them to a
    /// non-crypto API (writing a key file). Prefer ``withUnsafeBytes(_:)``.
    public func unsafeCopyOfBytes() -> [UInt8] {
        withUnsafeBytes { Array($0) }
    }

    /// Constant-time comparison (`CRYPTO_memcmp`); different lengths compare unequal.
    public static func == (lhs: SecretBytes, rhs: SecretBytes) -> Bool {
        guard lhs.count == rhs.count else { return false }
        if lhs.count == 0 { return true }
        return lhs.withUnsafeBytes { a in
            rhs.withUnsafeBytes { b in CRYPTO_memcmp(a.baseAddress, b.baseAddress, a.count) == 0 }
        }
    }

    /// Constant-time comparison with public bytes (for example, an expected tag).
    public func constantTimeEquals(_ other: [UInt8]) -> Bool {
        guard count == other.count else { return false }
        if count == 0 { return true }
        return withUnsafeBytes { a in
            other.withUnsafeBytes { b in CRYPTO_memcmp(a.baseAddress, b.baseAddress, a.count) == 0 }
        }
    }

    public var description: String { "SecretBytes(\(count) bytes, redacted)" }
    public var debugDescription: String { description }
}

/// Constant-time equality of two public byte strings of the same length (tags, MACs).
public func constantTimeEquals(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
    guard lhs.count == rhs.count else { return false }
    if lhs.isEmpty { return true }
    return lhs.withUnsafeBytes { a in
        rhs.withUnsafeBytes { b in CRYPTO_memcmp(a.baseAddress, b.baseAddress, a.count) == 0 }
    }
}
