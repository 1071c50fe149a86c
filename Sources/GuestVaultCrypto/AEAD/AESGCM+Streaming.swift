internal import CLibCrypto

/// Incremental AES-256-GCM sealing of one message whose bytes arrive in pieces:
/// `update` any number of times, then `finalize` for the tag.
public final class AESGCMStreamSealer {
    private let context: OpaquePointer
    private var finished = false
    private let operation = "AES-256-GCM streaming seal"

    public init(key: SecretBytes, nonce: [UInt8], authenticating aad: [UInt8] = []) throws {
        try AESGCM.checkKey(key, operation)
        try AESGCM.checkNonce(nonce.count, operation)
        context = try makeGCMContext(key: key, nonce: nonce, encrypt: true, operation: operation)
        if !aad.isEmpty {
            var produced: Int32 = 0
            let ctx = context
            try OpenSSL.check(aad.withUnsafeBytes { EVP_EncryptUpdate(ctx, nil, &produced, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32($0.count)) },
                              operation, "adding associated data")
        }
    }

    deinit { EVP_CIPHER_CTX_free(context) }

    /// Encrypts the next piece and returns its ciphertext (same length).
    public func update(_ piece: [UInt8]) throws -> [UInt8] {
        var buffer = piece
        try update(inPlace: &buffer)
        return buffer
    }

    /// Encrypts the next piece in place.
    public func update(inPlace buffer: inout [UInt8]) throws {
        guard !finished else {
            throw CryptoError(.invalidState, operation: operation, reason: "update after finalize")
        }
        try gcmUpdate(context, &buffer, encrypt: true, operation: operation)
    }

    /// Ends the message and returns the 16-byte tag. The sealer cannot be used again.
    public func finalize() throws -> [UInt8] {
        guard !finished else {
            throw CryptoError(.invalidState, operation: operation, reason: "finalize called twice")
        }
        finished = true
        var produced: Int32 = 0
        let ctx = context
        let status = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) {
            EVP_EncryptFinal_ex(ctx, $0.baseAddress, &produced)
        }
        try OpenSSL.check(status, operation, "finishing")
        var tag = [UInt8](repeating: 0, count: AESGCM.tagByteCount)
        try OpenSSL.check(tag.withUnsafeMutableBytes { EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, Int32($0.count), $0.baseAddress) },
                          operation, "reading the tag")
        return tag
    }
}

/// Incremental AES-256-GCM opening. The plaintext that `update` returns is not yet
/// authenticated: nothing may act on it, or persist it where others see it, until
/// ``finalize(tag:)`` has returned without throwing.
public final class AESGCMStreamOpener {
    private let context: OpaquePointer
    private var finished = false
    private let operation = "AES-256-GCM streaming open"

    public init(key: SecretBytes, nonce: [UInt8], authenticating aad: [UInt8] = []) throws {
        try AESGCM.checkKey(key, operation)
        try AESGCM.checkNonce(nonce.count, operation)
        context = try makeGCMContext(key: key, nonce: nonce, encrypt: false, operation: operation)
        if !aad.isEmpty {
            var produced: Int32 = 0
            let ctx = context
            try OpenSSL.check(aad.withUnsafeBytes { EVP_DecryptUpdate(ctx, nil, &produced, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32($0.count)) },
                              operation, "adding associated data")
        }
    }

    deinit { EVP_CIPHER_CTX_free(context) }

    /// Decrypts the next piece (unauthenticated until ``finalize(tag:)``).
    public func update(_ piece: [UInt8]) throws -> [UInt8] {
        var buffer = piece
        try update(inPlace: &buffer)
        return buffer
    }

    /// Decrypts the next piece in place (unauthenticated until ``finalize(tag:)``).
    public func update(inPlace buffer: inout [UInt8]) throws {
        guard !finished else {
            throw CryptoError(.invalidState, operation: operation, reason: "update after finalize")
        }
        try gcmUpdate(context, &buffer, encrypt: false, operation: operation)
    }

    /// Checks the tag over everything passed to `update`.
    public func finalize(tag: [UInt8]) throws {
        guard !finished else {
            throw CryptoError(.invalidState, operation: operation, reason: "finalize called twice")
        }
        guard tag.count == AESGCM.tagByteCount else {
            throw CryptoError(.invalidTagSize, operation: operation,
                              reason: "tag is \(tag.count) bytes, expected \(AESGCM.tagByteCount)")
        }
        finished = true
        let ctx = context
        var tagCopy = tag
        try OpenSSL.check(tagCopy.withUnsafeMutableBytes { EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, Int32($0.count), $0.baseAddress) },
                          operation, "setting the tag")
        var produced: Int32 = 0
        let status = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) {
            EVP_DecryptFinal_ex(ctx, $0.baseAddress, &produced)
        }
        if status != 1 {
            OpenSSL.clearErrors()
            throw CryptoError(.authenticationFailure, operation: operation,
                              reason: "the tag does not match: wrong key, wrong associated data, or the data was changed")
        }
    }
}

private func makeGCMContext(key: SecretBytes, nonce: [UInt8], encrypt: Bool, operation: String) throws -> OpaquePointer {
    let cipher = try Algorithms.require(Algorithms.shared.aes256GCM, "AES-256-GCM", operation)
    guard let ctx = EVP_CIPHER_CTX_new() else {
        throw OpenSSL.error(.libraryFailure, operation, "EVP_CIPHER_CTX_new failed")
    }
    let status = key.withUnsafeBytes { k in
        nonce.withUnsafeBytes { n in
            encrypt
                ? EVP_EncryptInit_ex2(ctx, cipher, k.baseAddress!.assumingMemoryBound(to: UInt8.self), n.baseAddress!.assumingMemoryBound(to: UInt8.self), nil)
                : EVP_DecryptInit_ex2(ctx, cipher, k.baseAddress!.assumingMemoryBound(to: UInt8.self), n.baseAddress!.assumingMemoryBound(to: UInt8.self), nil)
        }
    }
    if status != 1 {
        EVP_CIPHER_CTX_free(ctx)
        throw OpenSSL.error(.libraryFailure, operation, "cipher initialisation returned \(status)")
    }
    return ctx
}

private func gcmUpdate(_ ctx: OpaquePointer, _ buffer: inout [UInt8], encrypt: Bool, operation: String) throws {
    try buffer.withUnsafeMutableBytes { (io) in
        var offset = 0
        var produced: Int32 = 0
        while offset < io.count {
            let step = min(io.count - offset, AESGCM.maximumUpdate)
            let pointer = io.baseAddress!.advanced(by: offset).assumingMemoryBound(to: UInt8.self)
            let status = encrypt
                ? EVP_EncryptUpdate(ctx, pointer, &produced, pointer, Int32(step))
                : EVP_DecryptUpdate(ctx, pointer, &produced, pointer, Int32(step))
            try OpenSSL.check(status, operation, encrypt ? "encrypting" : "decrypting")
            offset += step
        }
    }
}
