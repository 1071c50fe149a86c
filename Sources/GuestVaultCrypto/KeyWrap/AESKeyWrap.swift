internal import CLibCrypto

/// AES-256 key wrap with padding (RFC 5649, NIST SP 800-38F KWP), through OpenSSL's
/// "AES-256-WRAP-PAD" cipher.
public enum AESKeyWrap {
    /// The largest key this wraps (far above any key; caps hostile input).
    public static let maximumPlaintextByteCount = 4096

    /// Wraps `plaintext` (1...4096 bytes) under `kek` (32 bytes). The output is the
    /// plaintext length rounded up to 8 bytes, plus 8.
    public static func wrapWithPadding(_ plaintext: SecretBytes, kek: SecretBytes) throws -> [UInt8] {
        let operation = "AES-256 key wrap"
        try checkKEK(kek, operation)
        guard plaintext.count > 0 else {
            throw CryptoError(.emptyInput, operation: operation, reason: "nothing to wrap: the key is empty")
        }
        guard plaintext.count <= maximumPlaintextByteCount else {
            throw CryptoError(.inputTooLarge, operation: operation,
                              reason: "key is \(plaintext.count) bytes, more than \(maximumPlaintextByteCount)")
        }
        let ctx = try makeContext(kek: kek, encrypt: true, operation: operation)
        defer { EVP_CIPHER_CTX_free(ctx) }
        var output = [UInt8](repeating: 0, count: (plaintext.count + 7) / 8 * 8 + 8 + 16)
        var produced: Int32 = 0
        let status = plaintext.withUnsafeBytes { p in
            output.withUnsafeMutableBufferPointer { o in
                EVP_EncryptUpdate(ctx, o.baseAddress, &produced, p.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(p.count))
            }
        }
        try OpenSSL.check(status, operation, "EVP_EncryptUpdate")
        output.removeSubrange(Int(produced)...)
        return output
    }

    /// Unwraps `wrapped` under `kek`; throws ``CryptoError/Code/authenticationFailure`` if
    /// the integrity check fails (wrong key or changed bytes).
    public static func unwrapWithPadding(_ wrapped: [UInt8], kek: SecretBytes) throws -> SecretBytes {
        let operation = "AES-256 key unwrap"
        try checkKEK(kek, operation)
        guard wrapped.count >= 16 else {
            throw CryptoError(.truncatedInput, operation: operation,
                              reason: "wrapped key is \(wrapped.count) bytes, at least 16 are needed")
        }
        guard wrapped.count % 8 == 0 else {
            throw CryptoError(.truncatedInput, operation: operation,
                              reason: "wrapped key is \(wrapped.count) bytes, not a multiple of 8")
        }
        guard wrapped.count <= maximumPlaintextByteCount + 8 else {
            throw CryptoError(.inputTooLarge, operation: operation,
                              reason: "wrapped key is \(wrapped.count) bytes, more than \(maximumPlaintextByteCount + 8)")
        }
        let ctx = try makeContext(kek: kek, encrypt: false, operation: operation)
        defer { EVP_CIPHER_CTX_free(ctx) }
        return try SecretBytes(unsafeUninitializedCapacity: wrapped.count + 16) { (out, count) in
            var produced: Int32 = 0
            let status = wrapped.withUnsafeBufferPointer {
                EVP_DecryptUpdate(ctx, out.baseAddress!.assumingMemoryBound(to: UInt8.self), &produced, $0.baseAddress, Int32($0.count))
            }
            if status <= 0 || produced <= 0 {
                OpenSSL.clearErrors()
                OPENSSL_cleanse(out.baseAddress, out.count)
                throw CryptoError(.authenticationFailure, operation: operation,
                                  reason: "integrity check failed: wrong key-encryption key, or the wrapped key was changed")
            }
            count = Int(produced)
        }
    }

    private static func checkKEK(_ kek: SecretBytes, _ operation: String) throws {
        guard kek.count == 32 else {
            throw CryptoError(.invalidKeySize, operation: operation,
                              reason: "key-encryption key is \(kek.count) bytes, AES-256 needs 32")
        }
    }

    private static func makeContext(kek: SecretBytes, encrypt: Bool, operation: String) throws -> OpaquePointer {
        let cipher = try Algorithms.require(Algorithms.shared.aes256WrapPad, "AES-256-WRAP-PAD", operation)
        guard let ctx = EVP_CIPHER_CTX_new() else {
            throw OpenSSL.error(.libraryFailure, operation, "EVP_CIPHER_CTX_new failed")
        }
        EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW)
        let status = kek.withUnsafeBytes { k in
            encrypt
                ? EVP_EncryptInit_ex2(ctx, cipher, k.baseAddress!.assumingMemoryBound(to: UInt8.self), nil, nil)
                : EVP_DecryptInit_ex2(ctx, cipher, k.baseAddress!.assumingMemoryBound(to: UInt8.self), nil, nil)
        }
        if status != 1 {
            EVP_CIPHER_CTX_free(ctx)
            throw OpenSSL.error(.libraryFailure, operation, "cipher initialisation returned \(status)")
        }
        return ctx
    }
}
