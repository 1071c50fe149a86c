import GuestVaultCrypto
import Testing

/// Wrong sizes, tampering, truncation and empty input: each a typed error.
@Suite struct BadInputTests {
    let key: SecretBytes
    let nonce: [UInt8]

    init() throws {
        key = try SecretBytes(randomCount: 32)
        nonce = try SecureRandom.bytes(count: 12)
    }

    private func expectCode(_ code: CryptoError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected \(code), but the call succeeded", sourceLocation: sourceLocation)
        } catch let error as CryptoError {
            #expect(error.code == code, "got \(error)", sourceLocation: sourceLocation)
            #expect(!error.operation.isEmpty && !error.reason.isEmpty, sourceLocation: sourceLocation)
        } catch {
            Issue.record("expected CryptoError \(code), got \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: [0, 1, 16, 24, 31, 33, 64])
    func wrongKeySizes(_ count: Int) throws {
        let bad = try SecretBytes(randomCount: count)
        expectCode(.invalidKeySize) { _ = try AESGCM.seal([1, 2, 3], key: bad, nonce: nonce) }
        expectCode(.invalidKeySize) { _ = try AESGCMContext(key: bad) }
        expectCode(.invalidKeySize) { _ = try AESGCMStreamSealer(key: bad, nonce: nonce) }
        expectCode(.invalidKeySize) { _ = try AESKeyWrap.wrapWithPadding(key, kek: bad) }
        expectCode(.invalidKeySize) { _ = try X25519.PrivateKey(rawRepresentation: bad) }
    }

    @Test(arguments: [0, 8, 11, 13, 16])
    func wrongNonceSizes(_ count: Int) throws {
        let badNonce = [UInt8](repeating: 7, count: count)
        expectCode(.invalidNonceSize) { _ = try AESGCM.seal([1, 2, 3], key: key, nonce: badNonce) }
        expectCode(.invalidNonceSize) { _ = try AESGCM.open([UInt8](repeating: 0, count: 32), key: key, nonce: badNonce) }
        expectCode(.invalidNonceSize) { _ = try AESGCMStreamOpener(key: key, nonce: badNonce) }
    }

    @Test func everyTamperedByteIsRefused() throws {
        let aad = Array("vm-uuid|tpm.permanent|gen 7".utf8)
        let sealed = try AESGCM.seal(Array(0..<64), key: key, nonce: nonce, authenticating: aad)
        for index in sealed.indices {
            for bit in 0..<8 {
                var changed = sealed
                changed[index] ^= 1 << bit
                expectCode(.authenticationFailure) { _ = try AESGCM.open(changed, key: key, nonce: nonce, authenticating: aad) }
            }
        }
        expectCode(.authenticationFailure) { _ = try AESGCM.open(sealed, key: key, nonce: nonce, authenticating: aad + [0]) }
        expectCode(.authenticationFailure) { _ = try AESGCM.open(sealed, key: key, nonce: nonce, authenticating: []) }
        expectCode(.authenticationFailure) { _ = try AESGCM.open(sealed, key: try SecretBytes(randomCount: 32), nonce: nonce, authenticating: aad) }
        #expect(try AESGCM.open(sealed, key: key, nonce: nonce, authenticating: aad) == Array(0..<64))
    }

    @Test func truncatedCiphertext() throws {
        let sealed = try AESGCM.seal(Array(repeating: 0xAB, count: 40), key: key, nonce: nonce)
        for length in 0..<sealed.count {
            let cut = Array(sealed.prefix(length))
            expectCode(length < 16 ? .truncatedInput : .authenticationFailure) {
                _ = try AESGCM.open(cut, key: key, nonce: nonce)
            }
        }
    }

    @Test func wrongTagSizeInPlace() throws {
        let context = try AESGCMContext(key: key)
        var buffer: [UInt8] = [1, 2, 3]
        expectCode(.invalidTagSize) { try context.open(inPlace: &buffer, tag: [1, 2, 3], nonce: nonce) }
    }

    @Test func failedOpenLeavesNoPlaintext() throws {
        let context = try AESGCMContext(key: key)
        var buffer = Array(repeating: UInt8(0x5A), count: 1000)
        var tag = try context.seal(inPlace: &buffer, nonce: nonce)
        tag[0] ^= 1
        expectCode(.authenticationFailure) { try context.open(inPlace: &buffer, tag: tag, nonce: nonce) }
        #expect(buffer.allSatisfy { $0 == 0 })
    }

    @Test func emptyInputWhereNotAllowed() throws {
        expectCode(.emptyInput) { _ = try AESKeyWrap.wrapWithPadding(SecretBytes(copying: []), kek: key) }
        expectCode(.emptyInput) { _ = try HKDF.deriveKey(inputKeyMaterial: SecretBytes(copying: []), outputByteCount: 32) }
        expectCode(.emptyInput) { _ = try KBKDF.counterHMACSHA256(key: SecretBytes(copying: []), label: [1], context: [2], outputByteCount: 32) }
        // Empty plaintext is allowed in GCM (the tag still authenticates the AAD).
        let sealed = try AESGCM.seal([], key: key, nonce: nonce, authenticating: [1])
        #expect(sealed.count == 16)
        #expect(try AESGCM.open(sealed, key: key, nonce: nonce, authenticating: [1]).isEmpty)
    }

    @Test func keyWrapRejectsBadLengthsAndTampering() throws {
        let wrapped = try AESKeyWrap.wrapWithPadding(try SecretBytes(randomCount: 32), kek: key)
        #expect(wrapped.count == 40)
        expectCode(.truncatedInput) { _ = try AESKeyWrap.unwrapWithPadding(Array(wrapped.prefix(8)), kek: key) }
        expectCode(.truncatedInput) { _ = try AESKeyWrap.unwrapWithPadding(Array(wrapped.prefix(39)), kek: key) }
        expectCode(.authenticationFailure) { _ = try AESKeyWrap.unwrapWithPadding(Array(wrapped.prefix(32)), kek: key) }
        for index in wrapped.indices {
            var changed = wrapped
            changed[index] ^= 0x80
            expectCode(.authenticationFailure) { _ = try AESKeyWrap.unwrapWithPadding(changed, kek: key) }
        }
        expectCode(.authenticationFailure) { _ = try AESKeyWrap.unwrapWithPadding(wrapped, kek: try SecretBytes(randomCount: 32)) }
        expectCode(.inputTooLarge) { _ = try AESKeyWrap.unwrapWithPadding([UInt8](repeating: 0, count: 8192), kek: key) }
    }

    @Test func kdfOutputLengths() throws {
        expectCode(.invalidOutputLength) { _ = try HKDF.deriveKey(inputKeyMaterial: key, outputByteCount: 0) }
        expectCode(.invalidOutputLength) { _ = try HKDF.deriveKey(inputKeyMaterial: key, outputByteCount: 255 * 32 + 1) }
        expectCode(.invalidOutputLength) { _ = try KBKDF.counterHMACSHA256(key: key, label: [1], context: [2], outputByteCount: 0) }
        expectCode(.invalidKeySize) { _ = try HKDF.expand(pseudoRandomKey: SecretBytes(copying: [1, 2]), outputByteCount: 32) }
        #expect(try HKDF.deriveKey(inputKeyMaterial: key, outputByteCount: 255 * 32).count == 255 * 32)
    }

    @Test func x25519BadPublicKeys() throws {
        expectCode(.invalidPublicKey) { _ = try X25519.PublicKey(rawRepresentation: [UInt8](repeating: 1, count: 31)) }
        let mine = try X25519.PrivateKey()
        // The all-zero point has small order: the shared secret would be zero.
        let zero = try X25519.PublicKey(rawRepresentation: [UInt8](repeating: 0, count: 32))
        do {
            _ = try mine.sharedSecret(with: zero)
            Issue.record("a small-order public key was accepted")
        } catch let error as CryptoError {
            #expect(error.code == .invalidPublicKey)
            #expect(!error.openSSLErrors.isEmpty, "the OpenSSL error queue text is carried: \(error)")
        }
    }

    @Test func streamingStateErrors() throws {
        let sealer = try AESGCMStreamSealer(key: key, nonce: nonce)
        _ = try sealer.finalize()
        expectCode(.invalidState) { _ = try sealer.update([1]) }
        expectCode(.invalidState) { _ = try sealer.finalize() }
        let opener = try AESGCMStreamOpener(key: key, nonce: nonce)
        expectCode(.invalidTagSize) { try opener.finalize(tag: [1, 2]) }
    }

    @Test func scryptParameterChecks() throws {
        expectCode(.invalidInput) {
            _ = try PasswordKDF.scrypt(passphrase: SecretBytes(copying: Array("pw".utf8)), salt: [1],
                                       parameters: .init(n: 1000, r: 8, p: 1), outputByteCount: 32)
        }
        expectCode(.invalidInput) {
            _ = try PasswordKDF.pbkdf2(passphrase: SecretBytes(copying: Array("pw".utf8)), salt: [1],
                                       iterations: 0, hash: .sha512, outputByteCount: 32)
        }
    }
}
