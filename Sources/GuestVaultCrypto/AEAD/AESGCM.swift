internal import CLibCrypto

/// AES-256-GCM with 96-bit nonces and 128-bit tags.
///
/// The one-shot functions here set up a key schedule for every call. Code that seals
/// many messages under one key keeps an ``AESGCMContext``, which keeps the key schedule
/// and the OpenSSL contexts and costs little more per message than the raw EVP calls.
public enum AESGCM {
    public static let keyByteCount = 32
    public static let nonceByteCount = 12
    public static let tagByteCount = 16

    /// Seals `plaintext`, returning `ciphertext || tag` (16 bytes longer than the input).
    public static func seal(
        _ plaintext: [UInt8], key: SecretBytes, nonce: [UInt8], authenticating aad: [UInt8] = []
    ) throws -> [UInt8] {
        try AESGCMContext(key: key).seal(plaintext, nonce: nonce, authenticating: aad)
    }

    /// Opens `ciphertext || tag`; throws ``CryptoError/Code/authenticationFailure`` if
    /// anything (key, nonce, associated data, a bit of the input) differs from sealing.
    public static func open(
        _ sealed: [UInt8], key: SecretBytes, nonce: [UInt8], authenticating aad: [UInt8] = []
    ) throws -> [UInt8] {
        try AESGCMContext(key: key).open(sealed, nonce: nonce, authenticating: aad)
    }

    static func checkKey(_ key: SecretBytes, _ operation: String) throws {
        guard key.count == keyByteCount else {
            throw CryptoError(.invalidKeySize, operation: operation,
                              reason: "key is \(key.count) bytes, AES-256 needs \(keyByteCount)")
        }
    }

    static func checkNonce(_ count: Int, _ operation: String) throws {
        guard count == nonceByteCount else {
            throw CryptoError(.invalidNonceSize, operation: operation,
                              reason: "nonce is \(count) bytes, AES-GCM here takes \(nonceByteCount)")
        }
    }

    /// Largest piece handed to one EVP update call (its length is a C `int`).
    static let maximumUpdate = 1 << 30
}

/// A reusable AES-256-GCM key: the key schedule is computed once, and each seal or open
/// only sets the nonce. Not thread-safe: give each thread its own context.
public final class AESGCMContext {
    private let encryptor: OpaquePointer
    private let decryptor: OpaquePointer

    public init(key: SecretBytes) throws {
        let operation = "AES-256-GCM key setup"
        try AESGCM.checkKey(key, operation)
        let cipher = try Algorithms.require(Algorithms.shared.aes256GCM, "AES-256-GCM", operation)
        guard let encryptor = EVP_CIPHER_CTX_new(), let decryptor = EVP_CIPHER_CTX_new() else {
            throw OpenSSL.error(.libraryFailure, operation, "EVP_CIPHER_CTX_new failed")
        }
        self.encryptor = encryptor
        self.decryptor = decryptor
        let (e, d) = key.withUnsafeBytes { raw in
            let k = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            return (EVP_EncryptInit_ex2(encryptor, cipher, k, nil, nil),
                    EVP_DecryptInit_ex2(decryptor, cipher, k, nil, nil))
        }
        try OpenSSL.check(e, operation, "EVP_EncryptInit_ex2")
        try OpenSSL.check(d, operation, "EVP_DecryptInit_ex2")
    }

    deinit {
        // EVP_CIPHER_CTX_free cleanses the key schedule.
        EVP_CIPHER_CTX_free(encryptor)
        EVP_CIPHER_CTX_free(decryptor)
    }

    // MARK: Combined form: ciphertext || tag.

    /// Seals `plaintext`, returning `ciphertext || tag`.
    public func seal(_ plaintext: [UInt8], nonce: [UInt8], authenticating aad: [UInt8] = []) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: plaintext.count + AESGCM.tagByteCount) { out, initialized in
            let raw = UnsafeMutableRawBufferPointer(out)
            try plaintext.withUnsafeBytes { input in
                let body = UnsafeMutableRawBufferPointer(rebasing: raw[0..<plaintext.count])
                let tag = UnsafeMutableRawBufferPointer(rebasing: raw[plaintext.count...])
                try rawSeal(nonce: nonce, aad: aad, input: input, output: body, tag: tag)
            }
            initialized = plaintext.count + AESGCM.tagByteCount
        }
    }

    /// Opens `ciphertext || tag`, returning the plaintext.
    public func open(_ sealed: [UInt8], nonce: [UInt8], authenticating aad: [UInt8] = []) throws -> [UInt8] {
        guard sealed.count >= AESGCM.tagByteCount else {
            throw CryptoError(.truncatedInput, operation: "AES-256-GCM open",
                              reason: "input is \(sealed.count) bytes, shorter than the \(AESGCM.tagByteCount)-byte tag")
        }
        let bodyCount = sealed.count - AESGCM.tagByteCount
        var output = [UInt8](repeating: 0, count: bodyCount)
        try sealed.withUnsafeBytes { (input) in
            try output.withUnsafeMutableBytes { (out) in
                try rawOpen(nonce: nonce, aad: aad,
                            input: UnsafeRawBufferPointer(rebasing: input[0..<bodyCount]),
                            tag: UnsafeRawBufferPointer(rebasing: input[bodyCount...]),
                            output: out)
            }
        }
        return output
    }

    // MARK: Detached, in place: no allocation per message.

    /// Encrypts `buffer` in place and returns the 16-byte tag.
    public func seal(inPlace buffer: inout [UInt8], nonce: [UInt8], authenticating aad: [UInt8] = []) throws -> [UInt8] {
        var tag = [UInt8](repeating: 0, count: AESGCM.tagByteCount)
        try buffer.withUnsafeMutableBytes { (io) in
            try tag.withUnsafeMutableBytes { (t) in
                try rawSeal(nonce: nonce, aad: aad, input: UnsafeRawBufferPointer(io), output: io, tag: t)
            }
        }
        return tag
    }

    /// Encrypts the first `count` bytes of `buffer` in place and writes the 16-byte tag
    /// right after them (so `buffer` needs at least `count + 16` bytes). No allocation:
    /// for stream chunks kept in reused buffers.
    public func seal(prefixOf buffer: inout [UInt8], count: Int, nonce: [UInt8], authenticating aad: [UInt8] = []) throws {
        guard count >= 0, buffer.count >= count + AESGCM.tagByteCount else {
            throw CryptoError(.invalidInput, operation: "AES-256-GCM seal",
                              reason: "a buffer of \(buffer.count) bytes cannot hold \(count) bytes and a tag")
        }
        try buffer.withUnsafeMutableBytes { io in
            let body = UnsafeMutableRawBufferPointer(rebasing: io[0..<count])
            let tag = UnsafeMutableRawBufferPointer(rebasing: io[count..<(count + AESGCM.tagByteCount)])
            try rawSeal(nonce: nonce, aad: aad, input: UnsafeRawBufferPointer(body), output: body, tag: tag)
        }
    }

    /// Encrypts `count` bytes of `buffer` from `start` in place and writes the tag right
    /// after them. No allocation.
    public func seal(rangeOf buffer: inout [UInt8], start: Int, count: Int, nonce: [UInt8], authenticating aad: [UInt8] = []) throws {
        guard start >= 0, count >= 0, buffer.count >= start + count + AESGCM.tagByteCount else {
            throw CryptoError(.invalidInput, operation: "AES-256-GCM seal",
                              reason: "a buffer of \(buffer.count) bytes cannot hold \(count) bytes at \(start) and a tag")
        }
        try buffer.withUnsafeMutableBytes { io in
            let body = UnsafeMutableRawBufferPointer(rebasing: io[start..<(start + count)])
            let tag = UnsafeMutableRawBufferPointer(rebasing: io[(start + count)..<(start + count + AESGCM.tagByteCount)])
            try rawSeal(nonce: nonce, aad: aad, input: UnsafeRawBufferPointer(body), output: body, tag: tag)
        }
    }

    /// Checks the tag stored right after the first `count` bytes of `buffer` and decrypts
    /// those bytes in place. On failure they are zeroed.
    public func open(prefixOf buffer: inout [UInt8], count: Int, nonce: [UInt8], authenticating aad: [UInt8] = []) throws {
        guard count >= 0, buffer.count >= count + AESGCM.tagByteCount else {
            throw CryptoError(.truncatedInput, operation: "AES-256-GCM open",
                              reason: "a buffer of \(buffer.count) bytes cannot hold \(count) bytes and a tag")
        }
        try buffer.withUnsafeMutableBytes { io in
            let body = UnsafeMutableRawBufferPointer(rebasing: io[0..<count])
            let tag = UnsafeRawBufferPointer(rebasing: io[count..<(count + AESGCM.tagByteCount)])
            try rawOpen(nonce: nonce, aad: aad, input: UnsafeRawBufferPointer(body), tag: tag, output: body)
        }
    }

    /// Checks the tag stored right after `count` bytes of `buffer` from `start` and
    /// decrypts those bytes in place. On failure they are zeroed. No allocation.
    public func open(rangeOf buffer: inout [UInt8], start: Int, count: Int, nonce: [UInt8], authenticating aad: [UInt8] = []) throws {
        guard start >= 0, count >= 0, buffer.count >= start + count + AESGCM.tagByteCount else {
            throw CryptoError(.truncatedInput, operation: "AES-256-GCM open",
                              reason: "a buffer of \(buffer.count) bytes cannot hold \(count) bytes at \(start) and a tag")
        }
        try buffer.withUnsafeMutableBytes { io in
            let body = UnsafeMutableRawBufferPointer(rebasing: io[start..<(start + count)])
            let tag = UnsafeRawBufferPointer(rebasing: io[(start + count)..<(start + count + AESGCM.tagByteCount)])
            try rawOpen(nonce: nonce, aad: aad, input: UnsafeRawBufferPointer(body), tag: tag, output: body)
        }
    }

    /// Decrypts `buffer` in place after checking `tag`. On failure the buffer is zeroed
    /// (no unauthenticated plaintext is left behind) and the error is thrown.
    public func open(inPlace buffer: inout [UInt8], tag: [UInt8], nonce: [UInt8], authenticating aad: [UInt8] = []) throws {
        guard tag.count == AESGCM.tagByteCount else {
            throw CryptoError(.invalidTagSize, operation: "AES-256-GCM open",
                              reason: "tag is \(tag.count) bytes, expected \(AESGCM.tagByteCount)")
        }
        try openDetached(inPlace: &buffer, tag: tag, nonce: nonce, authenticating: aad)
    }

    /// Like ``open(inPlace:tag:nonce:authenticating:)`` but also accepts the shorter tags
    /// (4 to 16 bytes) that NIST's test vectors use. Not for product formats.
    package func openDetached(inPlace buffer: inout [UInt8], tag: [UInt8], nonce: [UInt8], authenticating aad: [UInt8]) throws {
        guard (4...16).contains(tag.count) else {
            throw CryptoError(.invalidTagSize, operation: "AES-256-GCM open",
                              reason: "tag is \(tag.count) bytes, expected 4 to 16")
        }
        try buffer.withUnsafeMutableBytes { (io) in
            try tag.withUnsafeBytes { (t) in
                try rawOpen(nonce: nonce, aad: aad, input: UnsafeRawBufferPointer(io), tag: t, output: io)
            }
        }
    }

    /// Seals into a detached tag that may be shorter than 16 bytes (test vectors only).
    package func sealDetached(inPlace buffer: inout [UInt8], tagCount: Int, nonce: [UInt8], authenticating aad: [UInt8]) throws -> [UInt8] {
        let full = try seal(inPlace: &buffer, nonce: nonce, authenticating: aad)
        return Array(full.prefix(tagCount))
    }

    // MARK: The EVP calls.

    func rawSeal(
        nonce: [UInt8], aad: [UInt8], input: UnsafeRawBufferPointer,
        output: UnsafeMutableRawBufferPointer, tag: UnsafeMutableRawBufferPointer
    ) throws {
        let operation = "AES-256-GCM seal"
        try AESGCM.checkNonce(nonce.count, operation)
        precondition(output.count >= input.count && tag.count == AESGCM.tagByteCount)
        let ctx = encryptor
        try OpenSSL.check(nonce.withUnsafeBytes { EVP_EncryptInit_ex2(ctx, nil, nil, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), nil) },
                          operation, "setting the nonce")
        var produced: Int32 = 0
        if !aad.isEmpty {
            try OpenSSL.check(aad.withUnsafeBytes { EVP_EncryptUpdate(ctx, nil, &produced, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32($0.count)) },
                              operation, "adding associated data")
        }
        var offset = 0
        while offset < input.count {
            let step = min(input.count - offset, AESGCM.maximumUpdate)
            let status = EVP_EncryptUpdate(
                ctx, output.baseAddress!.advanced(by: offset).assumingMemoryBound(to: UInt8.self), &produced,
                input.baseAddress!.advanced(by: offset).assumingMemoryBound(to: UInt8.self), Int32(step))
            try OpenSSL.check(status, operation, "encrypting")
            offset += step
        }
        let finished = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) {
            EVP_EncryptFinal_ex(ctx, $0.baseAddress, &produced)
        }
        try OpenSSL.check(finished, operation, "finishing")
        try OpenSSL.check(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, Int32(AESGCM.tagByteCount), tag.baseAddress),
                          operation, "reading the tag")
    }

    func rawOpen(
        nonce: [UInt8], aad: [UInt8], input: UnsafeRawBufferPointer, tag: UnsafeRawBufferPointer,
        output: UnsafeMutableRawBufferPointer
    ) throws {
        let operation = "AES-256-GCM open"
        try AESGCM.checkNonce(nonce.count, operation)
        precondition(output.count >= input.count)
        let ctx = decryptor
        do {
            try OpenSSL.check(nonce.withUnsafeBytes { EVP_DecryptInit_ex2(ctx, nil, nil, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), nil) },
                              operation, "setting the nonce")
            var produced: Int32 = 0
            if !aad.isEmpty {
                try OpenSSL.check(aad.withUnsafeBytes { EVP_DecryptUpdate(ctx, nil, &produced, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32($0.count)) },
                                  operation, "adding associated data")
            }
            var offset = 0
            while offset < input.count {
                let step = min(input.count - offset, AESGCM.maximumUpdate)
                let status = EVP_DecryptUpdate(
                    ctx, output.baseAddress!.advanced(by: offset).assumingMemoryBound(to: UInt8.self), &produced,
                    input.baseAddress!.advanced(by: offset).assumingMemoryBound(to: UInt8.self), Int32(step))
                try OpenSSL.check(status, operation, "decrypting")
                offset += step
            }
            // EVP_CTRL_AEAD_SET_TAG copies the tag; the C prototype is not const-qualified.
            try OpenSSL.check(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, Int32(tag.count), UnsafeMutableRawPointer(mutating: tag.baseAddress)),
                              operation, "setting the tag")
            let final = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) {
                EVP_DecryptFinal_ex(ctx, $0.baseAddress, &produced)
            }
            if final != 1 {
                OpenSSL.clearErrors()
                throw CryptoError(.authenticationFailure, operation: operation,
                                  reason: "the tag does not match: wrong key, wrong associated data, or the data was changed")
            }
        } catch {
            if input.count > 0 { OPENSSL_cleanse(output.baseAddress, input.count) }
            throw error
        }
    }
}
