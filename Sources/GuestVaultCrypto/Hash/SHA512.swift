internal import CLibCrypto

/// SHA-512, one-shot. swtpm's "sha512" passphrase KDF is a plain SHA-512 of the
/// passphrase file, so there is also a form that keeps input and digest secret.
public enum SHA512 {
    public static let byteCount = 64

    /// The digest of `bytes`.
    public static func hash(_ bytes: [UInt8]) throws -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: byteCount)
        try bytes.withUnsafeBytes { input in
            try digest.withUnsafeMutableBytes { try digestInto($0, input) }
        }
        return digest
    }

    /// The digest of secret bytes, kept in ``SecretBytes``.
    public static func hash(secret: SecretBytes) throws -> SecretBytes {
        try secret.withUnsafeBytes { input in
            try SecretBytes(unsafeUninitializedCount: byteCount) { try digestInto($0, input) }
        }
    }

    private static func digestInto(_ output: UnsafeMutableRawBufferPointer, _ input: UnsafeRawBufferPointer) throws {
        let operation = "SHA-512"
        let md = try Algorithms.require(Algorithms.shared.sha512, "SHA2-512", operation)
        guard let ctx = EVP_MD_CTX_new() else {
            throw OpenSSL.error(.libraryFailure, operation, "EVP_MD_CTX_new failed")
        }
        defer { EVP_MD_CTX_free(ctx) }
        try OpenSSL.check(EVP_DigestInit_ex2(ctx, md, nil), operation, "EVP_DigestInit_ex2")
        if input.count > 0 {
            try OpenSSL.check(EVP_DigestUpdate(ctx, input.baseAddress, input.count), operation, "EVP_DigestUpdate")
        }
        var length: UInt32 = 0
        try OpenSSL.check(EVP_DigestFinal_ex(ctx, output.baseAddress!.assumingMemoryBound(to: UInt8.self), &length),
                          operation, "EVP_DigestFinal_ex")
        guard Int(length) == byteCount else {
            throw OpenSSL.error(.libraryFailure, operation, "the digest is \(length) bytes, expected \(byteCount)")
        }
    }
}
