internal import CLibCrypto

/// The SP 800-108r1 key-based KDF in counter mode with HMAC-SHA256, through OpenSSL's
/// EVP_KDF "KBKDF" (fetched once).
///
/// Each 32-byte block i (from 1) is
/// `HMAC-SHA256(key, [i]_32 || Label || 0x00 || Context || [L]_32)`, where `[x]_32` is a
/// 32-bit big-endian integer and L is the output length in bits; the output is the
/// first `outputByteCount` bytes of the concatenated blocks.
public enum KBKDF {
    /// Largest output supported here (a 32-bit counter could do far more; no use needs it).
    public static let maximumOutputByteCount = 1024

    /// One derivation with a fresh context.
    public static func counterHMACSHA256(
        key: SecretBytes, label: [UInt8], context: [UInt8], outputByteCount: Int
    ) throws -> SecretBytes {
        try KBKDFContext(key: key).deriveKey(label: label, context: context, outputByteCount: outputByteCount)
    }

    /// The counter-mode construction over an opaque fixed input: block i is
    /// `HMAC-SHA256(key, [i]_32 || fixedInput)`. This is the form NIST's CAVP vectors
    /// use; product code uses the label/context form.
    package static func counterHMACSHA256(
        key: SecretBytes, fixedInput: [UInt8], outputByteCount: Int
    ) throws -> SecretBytes {
        let operation = "SP 800-108 KDF"
        try checkArguments(key: key, outputByteCount: outputByteCount, operation: operation)
        let kdf = try Algorithms.require(Algorithms.shared.kbkdf, "KBKDF", operation)
        return try KDFRunner.derive(kdf: kdf, params: [
            .utf8(ParamName.mode, ParamName.counter),
            .utf8(ParamName.mac, ParamName.hmacName),
            .utf8(ParamName.digest, ParamName.sha256Name),
            .secret(ParamName.key, key),
            .octets(ParamName.salt, fixedInput),
            .int32(ParamName.useL, 0),
            .int32(ParamName.useSeparator, 0),
        ], outputByteCount: outputByteCount, operation: operation)
    }

    static func checkArguments(key: SecretBytes, outputByteCount: Int, operation: String) throws {
        guard key.count > 0 else {
            throw CryptoError(.emptyInput, operation: operation, reason: "key is empty")
        }
        guard (1...maximumOutputByteCount).contains(outputByteCount) else {
            throw CryptoError(.invalidOutputLength, operation: operation,
                              reason: "output length \(outputByteCount) is outside 1...\(maximumOutputByteCount)")
        }
    }
}

/// A KBKDF key kept ready for many derivations (one per VM, for example).
///
/// It computes the same construction as ``KBKDF/counterHMACSHA256(key:label:context:outputByteCount:)``
/// but keeps one keyed HMAC-SHA256 context (EVP_MAC "HMAC", fetched once): each block
/// re-initialises that context without re-keying it, which costs no allocation and no
/// key schedule. The tests check it against OpenSSL's EVP_KDF "KBKDF" and NIST's
/// vectors. Not thread-safe: one per thread, or behind a lock.
public final class KBKDFContext {
    private let mac: OpaquePointer
    private let operation = "SP 800-108 KDF"

    public init(key: SecretBytes) throws {
        try KBKDF.checkArguments(key: key, outputByteCount: 32, operation: operation)
        let operation = self.operation
        let algorithm = try Algorithms.require(Algorithms.shared.hmac, "HMAC", operation)
        guard let ctx = EVP_MAC_CTX_new(algorithm) else {
            throw OpenSSL.error(.libraryFailure, operation, "EVP_MAC_CTX_new failed")
        }
        do {
            let status = try Param.withArray([.utf8(ParamName.digest, ParamName.sha256Name)]) { params in
                key.withUnsafeBytes { k in
                    EVP_MAC_init(ctx, k.baseAddress!.assumingMemoryBound(to: UInt8.self), k.count, params)
                }
            }
            try OpenSSL.check(status, operation, "EVP_MAC_init")
        } catch {
            EVP_MAC_CTX_free(ctx)
            throw error
        }
        mac = ctx
    }

    deinit { EVP_MAC_CTX_free(mac) }

    /// `outputByteCount` bytes derived for `label` and `context`: blocks
    /// `HMAC(key, [i]_32 || label || 0x00 || context || [L]_32)` for i = 1, 2, ...
    public func deriveKey(label: [UInt8], context info: [UInt8], outputByteCount: Int) throws -> SecretBytes {
        guard (1...KBKDF.maximumOutputByteCount).contains(outputByteCount) else {
            throw CryptoError(.invalidOutputLength, operation: operation,
                              reason: "output length \(outputByteCount) is outside 1...\(KBKDF.maximumOutputByteCount)")
        }
        let ctx = mac
        let operation = self.operation
        let bits = UInt32(outputByteCount * 8)
        return try SecretBytes(unsafeUninitializedCount: outputByteCount) { out in
            try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 64) { block in
                defer { OPENSSL_cleanse(block.baseAddress, block.count) }
                var written = 0
                var counter: UInt32 = 1
                while written < outputByteCount {
                    var ok = EVP_MAC_init(ctx, nil, 0, nil) == 1
                    ok = ok && withUnsafeBytes(of: counter.bigEndian) { EVP_MAC_update(ctx, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), 4) } == 1
                    if !label.isEmpty {
                        ok = ok && label.withUnsafeBufferPointer { EVP_MAC_update(ctx, $0.baseAddress, $0.count) } == 1
                    }
                    var zero: UInt8 = 0
                    ok = ok && EVP_MAC_update(ctx, &zero, 1) == 1
                    if !info.isEmpty {
                        ok = ok && info.withUnsafeBufferPointer { EVP_MAC_update(ctx, $0.baseAddress, $0.count) } == 1
                    }
                    ok = ok && withUnsafeBytes(of: bits.bigEndian) { EVP_MAC_update(ctx, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), 4) } == 1
                    var length = 0
                    ok = ok && EVP_MAC_final(ctx, block.baseAddress, &length, block.count) == 1
                    guard ok, length == 32 else {
                        throw OpenSSL.error(.libraryFailure, operation, "HMAC-SHA256 block \(counter) failed")
                    }
                    let take = min(32, outputByteCount - written)
                    out.baseAddress!.advanced(by: written).copyMemory(from: block.baseAddress!, byteCount: take)
                    written += take
                    counter += 1
                }
            }
        }
    }
}
