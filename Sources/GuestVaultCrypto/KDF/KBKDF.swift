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

/// A KBKDF key kept ready for many derivations (one per VM, for example): the HMAC key
/// is set up once, and each derivation only sets label and context and derives. Not
/// thread-safe: one per thread.
public final class KBKDFContext {
    private let context: OpaquePointer
    private let key: SecretBytes
    private let operation = "SP 800-108 KDF"

    public init(key: SecretBytes) throws {
        try KBKDF.checkArguments(key: key, outputByteCount: 32, operation: operation)
        self.key = key
        context = try Self.makeContext(key: key, operation: operation)
    }

    deinit { EVP_KDF_CTX_free(context) }

    private static func makeContext(key: SecretBytes, operation: String) throws -> OpaquePointer {
        let kdf = try Algorithms.require(Algorithms.shared.kbkdf, "KBKDF", operation)
        guard let ctx = EVP_KDF_CTX_new(kdf) else {
            throw OpenSSL.error(.libraryFailure, operation, "EVP_KDF_CTX_new failed")
        }
        do {
            let status = try Param.withArray([
                .utf8(ParamName.mode, ParamName.counter),
                .utf8(ParamName.mac, ParamName.hmacName),
                .utf8(ParamName.digest, ParamName.sha256Name),
                .secret(ParamName.key, key),
            ]) { array in EVP_KDF_CTX_set_params(ctx, array) }
            try OpenSSL.check(status, operation, "setting the KDF key")
        } catch {
            EVP_KDF_CTX_free(ctx)
            throw error
        }
        return ctx
    }

    /// `outputByteCount` bytes derived for `label` and `context`.
    public func deriveKey(label: [UInt8], context info: [UInt8], outputByteCount: Int) throws -> SecretBytes {
        guard (1...KBKDF.maximumOutputByteCount).contains(outputByteCount) else {
            throw CryptoError(.invalidOutputLength, operation: operation,
                              reason: "output length \(outputByteCount) is outside 1...\(KBKDF.maximumOutputByteCount)")
        }
        // OpenSSL 3.0 ignores a zero-length label or context parameter, so a reused
        // context would keep the previous call's value: empty ones get a fresh context.
        if label.isEmpty || info.isEmpty {
            let fresh = try Self.makeContext(key: key, operation: operation)
            defer { EVP_KDF_CTX_free(fresh) }
            return try derive(fresh, label: label, info: info, outputByteCount: outputByteCount)
        }
        return try derive(context, label: label, info: info, outputByteCount: outputByteCount)
    }

    private func derive(_ ctx: OpaquePointer, label: [UInt8], info: [UInt8], outputByteCount: Int) throws -> SecretBytes {
        var params: [Param] = []
        if !label.isEmpty { params.append(.octets(ParamName.salt, label)) }
        if !info.isEmpty { params.append(.octets(ParamName.info, info)) }
        let operation = self.operation
        return try Param.withArray(params) { array -> SecretBytes in
            try SecretBytes(unsafeUninitializedCount: outputByteCount) { out in
                let status = EVP_KDF_derive(ctx, out.baseAddress!.assumingMemoryBound(to: UInt8.self), out.count, array)
                if status != 1 {
                    throw OpenSSL.error(.libraryFailure, operation, "EVP_KDF_derive returned \(status)")
                }
            }
        }
    }
}
