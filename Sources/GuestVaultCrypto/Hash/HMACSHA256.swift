internal import CLibCrypto

/// HMAC-SHA256 through OpenSSL's EVP_MAC "HMAC" (fetched once), one-shot or incremental.
public struct HMACSHA256: ~Copyable {
    public static let byteCount = 32

    private let context: OpaquePointer
    private let operation = "HMAC-SHA256"

    /// The 32-byte authentication code of `bytes` under `key`.
    public static func authenticationCode(for bytes: [UInt8], key: SecretBytes) throws -> [UInt8] {
        var mac = try HMACSHA256(key: key)
        try mac.update(bytes)
        return try mac.finalize()
    }

    /// Whether `code` is the authentication code of `bytes` under `key`, compared in
    /// constant time.
    public static func isValid(_ code: [UInt8], for bytes: [UInt8], key: SecretBytes) throws -> Bool {
        constantTimeEquals(try authenticationCode(for: bytes, key: key), code)
    }

    /// Starts an incremental MAC under `key` (any length; keys longer than 64 bytes are
    /// hashed first, as RFC 2104 says).
    public init(key: SecretBytes) throws {
        let operation = self.operation
        let mac = try Algorithms.require(Algorithms.shared.hmac, "HMAC", operation)
        guard let ctx = EVP_MAC_CTX_new(mac) else {
            throw OpenSSL.error(.libraryFailure, operation, "EVP_MAC_CTX_new failed")
        }
        do {
            let status = try Param.withArray([.utf8(ParamName.digest, ParamName.sha256Name)]) { (params) in
                key.withUnsafeBytes { k in
                    // A zero-length key still needs a non-null pointer.
                    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1) { empty in
                        EVP_MAC_init(ctx, k.count > 0 ? k.baseAddress!.assumingMemoryBound(to: UInt8.self) : UnsafePointer(empty.baseAddress), k.count, params)
                    }
                }
            }
            try OpenSSL.check(status, operation, "EVP_MAC_init")
        } catch {
            EVP_MAC_CTX_free(ctx)
            throw error
        }
        context = ctx
    }

    deinit { EVP_MAC_CTX_free(context) }

    /// Adds `bytes`.
    public mutating func update(_ bytes: [UInt8]) throws {
        guard !bytes.isEmpty else { return }
        let ctx = context
        try OpenSSL.check(bytes.withUnsafeBytes { EVP_MAC_update(ctx, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), $0.count) },
                          operation, "EVP_MAC_update")
    }

    /// Ends the MAC and returns the 32-byte code.
    public consuming func finalize() throws -> [UInt8] {
        var code = [UInt8](repeating: 0, count: Self.byteCount)
        var length = 0
        let ctx = context
        try OpenSSL.check(code.withUnsafeMutableBufferPointer { EVP_MAC_final(ctx, $0.baseAddress, &length, $0.count) },
                          operation, "EVP_MAC_final")
        return code
    }
}
