internal import CLibCrypto

/// The bare EVP calls of one AES-256-GCM seal, with no checks and no allocation, so
/// benchmarks can show what ``AESGCMContext`` adds on top. Not for product use.
@_spi(Benchmarking) public final class RawEVPBaseline {
    private let context: OpaquePointer
    private var tag = [UInt8](repeating: 0, count: 16)

    @_spi(Benchmarking) public init(key: SecretBytes) throws {
        try AESGCM.checkKey(key, "EVP baseline")
        let cipher = try Algorithms.require(Algorithms.shared.aes256GCM, "AES-256-GCM", "EVP baseline")
        context = EVP_CIPHER_CTX_new()!
        let ctx = context
        _ = key.withUnsafeBytes { EVP_EncryptInit_ex2(ctx, cipher, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), nil, nil) }
    }

    deinit { EVP_CIPHER_CTX_free(context) }

    /// EVP_EncryptInit_ex2 (nonce), EVP_EncryptUpdate (AAD), EVP_EncryptUpdate (data, in
    /// place), EVP_EncryptFinal_ex, EVP_CIPHER_CTX_ctrl (tag): nothing else.
    @_spi(Benchmarking) public func sealInPlace(_ buffer: inout [UInt8], nonce: [UInt8], aad: [UInt8]) {
        let ctx = context
        var produced: Int32 = 0
        nonce.withUnsafeBufferPointer { n in
            aad.withUnsafeBufferPointer { a in
                buffer.withUnsafeMutableBufferPointer { b in
                    tag.withUnsafeMutableBufferPointer { t in
                        _ = EVP_EncryptInit_ex2(ctx, nil, nil, n.baseAddress, nil)
                        _ = EVP_EncryptUpdate(ctx, nil, &produced, a.baseAddress, Int32(a.count))
                        _ = EVP_EncryptUpdate(ctx, b.baseAddress, &produced, b.baseAddress, Int32(b.count))
                        _ = EVP_EncryptFinal_ex(ctx, t.baseAddress, &produced)
                        _ = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, t.baseAddress)
                    }
                }
            }
        }
    }
}
