internal import CLibCrypto

/// HKDF with SHA-256 (RFC 5869), through OpenSSL's EVP_KDF "HKDF" (fetched once).
public enum HKDF {
    /// The largest output RFC 5869 allows with SHA-256: 255 blocks of 32 bytes.
    public static let maximumOutputByteCount = 255 * 32

    /// Extract-then-expand: `outputByteCount` bytes of key from `inputKeyMaterial`.
    /// An empty `salt` means the RFC's default (32 zero bytes).
    public static func deriveKey(
        inputKeyMaterial: SecretBytes, salt: [UInt8] = [], info: [UInt8] = [], outputByteCount: Int
    ) throws -> SecretBytes {
        try run(mode: ParamName.extractAndExpand, key: inputKeyMaterial, salt: salt, info: info,
                outputByteCount: outputByteCount, operation: "HKDF-SHA256")
    }

    /// The extract step alone: the 32-byte pseudorandom key.
    public static func extract(inputKeyMaterial: SecretBytes, salt: [UInt8] = []) throws -> SecretBytes {
        try run(mode: ParamName.extractOnly, key: inputKeyMaterial, salt: salt, info: [],
                outputByteCount: 32, operation: "HKDF-SHA256 extract")
    }

    /// The expand step alone, from a pseudorandom key of at least 32 bytes.
    public static func expand(pseudoRandomKey: SecretBytes, info: [UInt8] = [], outputByteCount: Int) throws -> SecretBytes {
        guard pseudoRandomKey.count >= 32 else {
            throw CryptoError(.invalidKeySize, operation: "HKDF-SHA256 expand",
                              reason: "pseudorandom key is \(pseudoRandomKey.count) bytes, needs at least 32")
        }
        return try run(mode: ParamName.expandOnly, key: pseudoRandomKey, salt: [], info: info,
                       outputByteCount: outputByteCount, operation: "HKDF-SHA256 expand")
    }

    private static func run(
        mode: CName, key: SecretBytes, salt: [UInt8], info: [UInt8], outputByteCount: Int, operation: String
    ) throws -> SecretBytes {
        guard (1...maximumOutputByteCount).contains(outputByteCount) else {
            throw CryptoError(.invalidOutputLength, operation: operation,
                              reason: "output length \(outputByteCount) is outside 1...\(maximumOutputByteCount)")
        }
        guard key.count > 0 else {
            throw CryptoError(.emptyInput, operation: operation, reason: "input key material is empty")
        }
        let kdf = try Algorithms.require(Algorithms.shared.hkdf, "HKDF", operation)
        var params: [Param] = [
            .utf8(ParamName.mode, mode),
            .utf8(ParamName.digest, ParamName.sha256Name),
            .secret(ParamName.key, key),
        ]
        if !salt.isEmpty { params.append(.octets(ParamName.salt, salt)) }
        if !info.isEmpty { params.append(.octets(ParamName.info, info)) }
        return try KDFRunner.derive(kdf: kdf, params: params, outputByteCount: outputByteCount, operation: operation)
    }
}

/// Runs one EVP_KDF derivation into fresh ``SecretBytes``.
enum KDFRunner {
    static func derive(kdf: OpaquePointer, params: [Param], outputByteCount: Int, operation: String) throws -> SecretBytes {
        guard let ctx = EVP_KDF_CTX_new(kdf) else {
            throw OpenSSL.error(.libraryFailure, operation, "EVP_KDF_CTX_new failed")
        }
        defer { EVP_KDF_CTX_free(ctx) }
        return try Param.withArray(params) { (array) throws -> SecretBytes in
            try SecretBytes(unsafeUninitializedCount: outputByteCount) { (out) in
                let status = EVP_KDF_derive(ctx, out.baseAddress!.assumingMemoryBound(to: UInt8.self), out.count, array)
                if status != 1 {
                    throw OpenSSL.error(.libraryFailure, operation, "EVP_KDF_derive returned \(status)")
                }
            }
        }
    }
}
