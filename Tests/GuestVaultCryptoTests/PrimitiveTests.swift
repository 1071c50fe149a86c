import GuestVaultCrypto
import Testing

@Suite struct PrimitiveTests {
    @Test func secretBytesNeverPrint() throws {
        let secret = SecretBytes(copying: Array("hunter2-hunter2-hunter2".utf8))
        #expect(String(describing: secret) == "SecretBytes(23 bytes, redacted)")
        #expect(String(reflecting: secret) == "SecretBytes(23 bytes, redacted)")
        #expect(!"\(secret)".contains("hunter"))
        let key = try X25519.PrivateKey()
        #expect("\(key)".contains("private: redacted"))
    }

    @Test func secretBytesConcatenateSliceAndCopyWithoutArrays() throws {
        let a = SecretBytes(copying: [1, 2, 3]), b = SecretBytes(copying: [4, 5]), empty = SecretBytes(copying: [])
        let joined = SecretBytes(concatenating: [a, empty, b])
        #expect(joined.unsafeCopyOfBytes() == [1, 2, 3, 4, 5])
        #expect(joined.slice(1..<4).unsafeCopyOfBytes() == [2, 3, 4])
        #expect(joined.slice(5..<5).count == 0)
        var buffer = [UInt8](repeating: 9, count: 8)
        b.copy(into: &buffer, at: 6)
        #expect(buffer == [9, 9, 9, 9, 9, 9, 4, 5])
        // Contiguous and non-contiguous sources give the same bytes.
        let source: [UInt8] = [7, 8, 9, 10]
        #expect(SecretBytes(copying: source[1...]).unsafeCopyOfBytes() == [8, 9, 10])
        #expect(SecretBytes(copying: source.lazy.map { $0 + 1 }).unsafeCopyOfBytes() == [8, 9, 10, 11])
        var hash = try SHA256()
        try hash.update(joined)
        #expect(try hash.finalize() == SHA256.hash([1, 2, 3, 4, 5]))
    }

    @Test func secretBytesCompareByValue() throws {
        let a = SecretBytes(copying: [1, 2, 3, 4])
        #expect(a == SecretBytes(copying: [1, 2, 3, 4]))
        #expect(a != SecretBytes(copying: [1, 2, 3, 5]))
        #expect(a != SecretBytes(copying: [1, 2, 3]))
        #expect(SecretBytes(copying: []) == SecretBytes(copying: []))
        #expect(a.constantTimeEquals([1, 2, 3, 4]) && !a.constantTimeEquals([1, 2, 3]))
        let r1 = try SecretBytes(randomCount: 32), r2 = try SecretBytes(randomCount: 32)
        #expect(r1 != r2)
    }

    @Test(arguments: [0, 1, 15, 16, 17, 1000, 65536 + 3])
    func streamingMatchesOneShot(_ size: Int) throws {
        let key = try SecretBytes(randomCount: 32)
        let nonce = try SecureRandom.bytes(count: 12)
        let aad = Array("bound".utf8)
        let plaintext = try SecureRandom.bytes(count: size)
        let oneShot = try AESGCM.seal(plaintext, key: key, nonce: nonce, authenticating: aad)

        let sealer = try AESGCMStreamSealer(key: key, nonce: nonce, authenticating: aad)
        var ciphertext: [UInt8] = []
        var offset = 0
        var piece = 1
        while offset < plaintext.count {
            let end = min(plaintext.count, offset + piece)
            ciphertext += try sealer.update(Array(plaintext[offset..<end]))
            offset = end
            piece = piece * 3 + 1
        }
        let tag = try sealer.finalize()
        #expect(ciphertext + tag == oneShot)

        let opener = try AESGCMStreamOpener(key: key, nonce: nonce, authenticating: aad)
        let opened = try opener.update(ciphertext)
        try opener.finalize(tag: tag)
        #expect(opened == plaintext)

        let badOpener = try AESGCMStreamOpener(key: key, nonce: nonce, authenticating: aad + [1])
        _ = try badOpener.update(ciphertext)
        #expect(throws: CryptoError.self) { try badOpener.finalize(tag: tag) }
    }

    @Test func reusedContextSealsManyMessages() throws {
        let key = try SecretBytes(randomCount: 32)
        let context = try AESGCMContext(key: key)
        for i in 0..<50 {
            let nonce = try SecureRandom.bytes(count: 12)
            let message = try SecureRandom.bytes(count: i * 37)
            let sealed = try context.seal(message, nonce: nonce, authenticating: [UInt8(i)])
            #expect(try AESGCM.open(sealed, key: key, nonce: nonce, authenticating: [UInt8(i)]) == message)
            #expect(try context.open(sealed, nonce: nonce, authenticating: [UInt8(i)]) == message)
        }
    }

    @Test func sha256AndHMACKnownAnswers() throws {
        // FIPS 180-2 "abc" and RFC 4231 test case 2.
        #expect(hexString(try SHA256.hash(Array("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(hexString(try SHA256.hash([])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        let mac = try HMACSHA256.authenticationCode(for: Array("what do ya want for nothing?".utf8), key: SecretBytes(copying: Array("Jefe".utf8)))
        #expect(hexString(mac) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(try HMACSHA256.isValid(mac, for: Array("what do ya want for nothing?".utf8), key: SecretBytes(copying: Array("Jefe".utf8))))
        var hasher = try SHA256()
        try hasher.update(Array("a".utf8))
        let partial = try hasher.current()
        try hasher.update(Array("bc".utf8))
        #expect(partial == (try SHA256.hash(Array("a".utf8))))
        #expect(hexString(try hasher.finalize()).hasPrefix("ba7816bf"))
    }

    @Test func passwordKDFKnownAnswers() throws {
        // RFC 7914 section 12, second vector.
        let scrypt = try PasswordKDF.scrypt(passphrase: SecretBytes(copying: Array("password".utf8)), salt: Array("NaCl".utf8),
                                            parameters: .init(n: 1024, r: 8, p: 16), outputByteCount: 64)
        #expect(hexString(scrypt.unsafeCopyOfBytes()).hasPrefix("fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"))
        // RFC 7914 section 11 (PBKDF2-HMAC-SHA256, c = 1).
        let pbkdf2 = try PasswordKDF.pbkdf2(passphrase: SecretBytes(copying: Array("passwd".utf8)), salt: Array("salt".utf8),
                                            iterations: 1, hash: .sha256, outputByteCount: 64)
        #expect(hexString(pbkdf2.unsafeCopyOfBytes()).hasPrefix("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"))
    }

    @Test func x25519Agreement() throws {
        let alice = try X25519.PrivateKey(), bob = try X25519.PrivateKey()
        #expect(try alice.sharedSecret(with: bob.publicKey) == (try bob.sharedSecret(with: alice.publicKey)))
    }

    @Test func hexRoundTrip() {
        #expect(bytes(fromHex: "00ff10") == [0, 255, 16])
        #expect(bytes(fromHex: "0") == nil)
        #expect(bytes(fromHex: "zz") == nil)
        #expect(hexString([0xde, 0xad]) == "dead")
    }
}
