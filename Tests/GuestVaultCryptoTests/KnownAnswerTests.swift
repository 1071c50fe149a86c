import Foundation
import GuestVaultCrypto
import Testing

/// Every case of every public vector file in Vectors/public.
@Suite struct KnownAnswerTests {
    struct HKDFCase: Decodable { let id: Int; let ikm, salt, info, prk, okm: String; let length: Int }
    struct KBKDFCase: Decodable { let id: Int; let key, fixedInput, output: String; let lengthBits: Int }
    struct GCMCase: Decodable { let id: Int; let key, iv, aad, plaintext, ciphertext, tag: String; let valid: Bool }
    struct X25519Case: Decodable { let id: Int; let scalar, u, output: String }
    struct KWPCase: Decodable { let id: Int; let kek, plaintext, ciphertext: String; let valid: Bool }

    @Test func hkdfRFC5869() throws {
        let file = try VectorFile<HKDFCase>.load("hkdf-sha256-rfc5869.json")
        var ran = 0
        for c in file.cases {
            let ikm = SecretBytes(copying: hex(c.ikm))
            let prk = try HKDF.extract(inputKeyMaterial: ikm, salt: hex(c.salt))
            #expect(prk.unsafeCopyOfBytes() == hex(c.prk), "case \(c.id): PRK")
            let okm = try HKDF.deriveKey(inputKeyMaterial: ikm, salt: hex(c.salt), info: hex(c.info), outputByteCount: c.length)
            #expect(okm.unsafeCopyOfBytes() == hex(c.okm), "case \(c.id): OKM")
            let expanded = try HKDF.expand(pseudoRandomKey: prk, info: hex(c.info), outputByteCount: c.length)
            #expect(expanded == okm, "case \(c.id): expand")
            ran += 1
        }
        report("HKDF-SHA256", ran: ran, of: file.cases.count, source: file.source)
        #expect(ran == file.cases.count && ran > 0)
    }

    @Test func kbkdfNISTCounterMode() throws {
        let file = try VectorFile<KBKDFCase>.load("kbkdf-ctr-hmac-sha256-nist.json")
        var ran = 0
        for c in file.cases {
            #expect(c.lengthBits % 8 == 0)
            let out = try KBKDF.counterHMACSHA256(key: SecretBytes(copying: hex(c.key)), fixedInput: hex(c.fixedInput),
                                                  outputByteCount: c.lengthBits / 8)
            #expect(out.unsafeCopyOfBytes() == hex(c.output), "case \(c.id)")
            ran += 1
        }
        report("SP 800-108 KBKDF counter HMAC-SHA256", ran: ran, of: file.cases.count, source: file.source)
        #expect(ran == file.cases.count && ran > 0)
    }

    /// The label/context form is the counter form over Label || 0x00 || Context || [L]_32.
    @Test func kbkdfLabelContextMatchesFixedInputForm() throws {
        let key = try SecretBytes(randomCount: 32)
        let label = Array("GuestVault KEK".utf8)
        let context = try SecureRandom.bytes(count: 20)
        for length in [16, 32, 48, 64] {
            let bits = UInt32(length * 8)
            let fixed = label + [0] + context + [UInt8(bits >> 24), UInt8(bits >> 16 & 0xff), UInt8(bits >> 8 & 0xff), UInt8(bits & 0xff)]
            let viaFixed = try KBKDF.counterHMACSHA256(key: key, fixedInput: fixed, outputByteCount: length)
            let viaLabel = try KBKDF.counterHMACSHA256(key: key, label: label, context: context, outputByteCount: length)
            #expect(viaFixed == viaLabel)
            #expect(try KBKDFContext(key: key).deriveKey(label: label, context: context, outputByteCount: length) == viaLabel)
            // And by hand: the first block is one HMAC.
            let block1 = try HMACSHA256.authenticationCode(for: [0, 0, 0, 1] + fixed, key: key)
            #expect(Array(viaLabel.unsafeCopyOfBytes().prefix(min(32, length))) == Array(block1.prefix(min(32, length))))
        }
        // A reused context gives the same answers as fresh derivations, in any order.
        let reusable = try KBKDFContext(key: key)
        for context in [[1, 2, 3], [4], [1, 2, 3], []] as [[UInt8]] {
            let a = try reusable.deriveKey(label: label, context: context, outputByteCount: 32)
            let b = try KBKDF.counterHMACSHA256(key: key, label: label, context: context, outputByteCount: 32)
            #expect(a == b)
        }
    }

    @Test func aesGCMEncryptNIST() throws {
        let file = try VectorFile<GCMCase>.load("aes-256-gcm-nist-encrypt.json")
        var ran = 0
        for c in file.cases {
            let context = try AESGCMContext(key: SecretBytes(copying: hex(c.key)))
            var buffer = hex(c.plaintext)
            let tag = try context.sealDetached(inPlace: &buffer, tagCount: hex(c.tag).count, nonce: hex(c.iv), authenticating: hex(c.aad))
            #expect(buffer == hex(c.ciphertext), "case \(c.id): ciphertext")
            #expect(tag == hex(c.tag), "case \(c.id): tag")
            if hex(c.tag).count == 16 {
                let combined = try AESGCM.seal(hex(c.plaintext), key: SecretBytes(copying: hex(c.key)), nonce: hex(c.iv), authenticating: hex(c.aad))
                #expect(combined == hex(c.ciphertext) + hex(c.tag), "case \(c.id): one-shot")
            }
            ran += 1
        }
        report("AES-256-GCM encrypt", ran: ran, of: file.cases.count, source: file.source)
        #expect(ran == file.cases.count && ran > 0)
    }

    @Test func aesGCMDecryptNISTIncludingInvalidTags() throws {
        let file = try VectorFile<GCMCase>.load("aes-256-gcm-nist-decrypt.json")
        var ran = 0, refused = 0
        for c in file.cases {
            let context = try AESGCMContext(key: SecretBytes(copying: hex(c.key)))
            var buffer = hex(c.ciphertext)
            do {
                try context.openDetached(inPlace: &buffer, tag: hex(c.tag), nonce: hex(c.iv), authenticating: hex(c.aad))
                #expect(c.valid, "case \(c.id): an invalid case opened")
                #expect(buffer == hex(c.plaintext), "case \(c.id): plaintext")
            } catch let error as CryptoError {
                #expect(!c.valid, "case \(c.id): a valid case was refused: \(error)")
                #expect(error.code == .authenticationFailure)
                #expect(buffer.allSatisfy { $0 == 0 }, "case \(c.id): unauthenticated plaintext left behind")
                refused += 1
            }
            ran += 1
        }
        report("AES-256-GCM decrypt (\(refused) invalid refused)", ran: ran, of: file.cases.count, source: file.source)
        #expect(ran == file.cases.count && refused == file.cases.filter { !$0.valid }.count && refused > 0)
    }

    @Test func x25519RFC7748() throws {
        let file = try VectorFile<X25519Case>.load("x25519-rfc7748.json")
        var ran = 0
        for c in file.cases {
            let key = try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: hex(c.scalar)))
            let shared = try key.sharedSecret(with: X25519.PublicKey(rawRepresentation: hex(c.u)))
            #expect(shared.unsafeCopyOfBytes() == hex(c.output), "case \(c.id)")
            if hex(c.u) == [9] + [UInt8](repeating: 0, count: 31) {
                #expect(key.publicKey.rawRepresentation == hex(c.output), "case \(c.id): public key")
            }
            ran += 1
        }
        report("X25519", ran: ran, of: file.cases.count, source: file.source)
        #expect(ran == file.cases.count && ran > 0)
    }

    @Test func keyWrapWithPaddingNIST() throws {
        var ran = 0, refused = 0, total = 0
        for name in ["kwp-aes256-nist-ae.json", "kwp-aes256-nist-ad.json"] {
            let file = try VectorFile<KWPCase>.load(name)
            total += file.cases.count
            for c in file.cases {
                let kek = SecretBytes(copying: hex(c.kek))
                if c.valid {
                    let wrapped = try AESKeyWrap.wrapWithPadding(SecretBytes(copying: hex(c.plaintext)), kek: kek)
                    #expect(wrapped == hex(c.ciphertext), "\(name) case \(c.id): wrap")
                    let unwrapped = try AESKeyWrap.unwrapWithPadding(hex(c.ciphertext), kek: kek)
                    #expect(unwrapped.unsafeCopyOfBytes() == hex(c.plaintext), "\(name) case \(c.id): unwrap")
                } else {
                    #expect(throws: CryptoError.self, "\(name) case \(c.id): invalid case unwrapped") {
                        _ = try AESKeyWrap.unwrapWithPadding(hex(c.ciphertext), kek: kek)
                    }
                    refused += 1
                }
                ran += 1
            }
            report("AES-256 KWP \(name)", ran: file.cases.count, of: file.cases.count, source: file.source)
        }
        #expect(ran == total && refused > 0)
    }
}
