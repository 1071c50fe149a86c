internal import CLibCrypto

/// SHA-256, one-shot or incremental (for transcript hashes).
public struct SHA256: ~Copyable {
    public static let byteCount = 32

    private let context: OpaquePointer
    private let operation = "SHA-256"

    /// The digest of `bytes`.
    public static func hash(_ bytes: [UInt8]) throws -> [UInt8] {
        var hasher = try SHA256()
        try hasher.update(bytes)
        return try hasher.finalize()
    }

    /// Starts an incremental hash.
    public init() throws {
        let md = try Algorithms.require(Algorithms.shared.sha256, "SHA2-256", operation)
        guard let ctx = EVP_MD_CTX_new() else {
            throw OpenSSL.error(.libraryFailure, operation, "EVP_MD_CTX_new failed")
        }
        if EVP_DigestInit_ex2(ctx, md, nil) != 1 {
            EVP_MD_CTX_free(ctx)
            throw OpenSSL.error(.libraryFailure, operation, "EVP_DigestInit_ex2 failed")
        }
        context = ctx
    }

    deinit { EVP_MD_CTX_free(context) }

    /// Adds `bytes`.
    public mutating func update(_ bytes: [UInt8]) throws {
        let ctx = context
        try OpenSSL.check(bytes.withUnsafeBytes { EVP_DigestUpdate(ctx, $0.baseAddress, $0.count) }, operation, "EVP_DigestUpdate")
    }

    /// Adds secret bytes without copying them out of their storage.
    public mutating func update(_ secret: SecretBytes) throws {
        let ctx = context
        try OpenSSL.check(secret.withUnsafeBytes { EVP_DigestUpdate(ctx, $0.baseAddress, $0.count) }, operation, "EVP_DigestUpdate")
    }

    /// Adds `bytes[range]` without copying them.
    public mutating func update(_ bytes: [UInt8], range: Range<Int>) throws {
        precondition(range.lowerBound >= 0 && range.upperBound <= bytes.count)
        let ctx = context
        try OpenSSL.check(bytes.withUnsafeBytes { EVP_DigestUpdate(ctx, $0.baseAddress! + range.lowerBound, range.count) }, operation, "EVP_DigestUpdate")
    }

    /// The digest so far, without ending the hash (for running transcript hashes).
    public func current() throws -> [UInt8] {
        guard let copy = EVP_MD_CTX_new() else {
            throw OpenSSL.error(.libraryFailure, operation, "EVP_MD_CTX_new failed")
        }
        defer { EVP_MD_CTX_free(copy) }
        try OpenSSL.check(EVP_MD_CTX_copy_ex(copy, context), operation, "EVP_MD_CTX_copy_ex")
        return try Self.final(copy, operation)
    }

    /// Ends the hash and returns the digest.
    public consuming func finalize() throws -> [UInt8] {
        try Self.final(context, operation)
    }

    private static func final(_ ctx: OpaquePointer, _ operation: String) throws -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: byteCount)
        var length: UInt32 = 0
        try OpenSSL.check(digest.withUnsafeMutableBufferPointer { EVP_DigestFinal_ex(ctx, $0.baseAddress, &length) },
                          operation, "EVP_DigestFinal_ex")
        return digest
    }
}
