import GuestVaultCrypto
import Testing

/// AES-CBC: NIST known answers, the padding rules (PKCS#7 and swtpm's padding to the key
/// length), and typed errors for bad sizes and bad padding.
@Suite struct AESCBCTests {
    // NIST SP 800-38A, appendix F.2: F.2.1/F.2.2 (CBC-AES128) and F.2.5/F.2.6
    // (CBC-AES256), four blocks, no padding.
    static let iv = hex("000102030405060708090a0b0c0d0e0f")
    static let plaintext = hex("""
        6bc1bee22e409f96e93d7e117393172a\
        ae2d8a571e03ac9c9eb76fac45af8e51\
        30c81c46a35ce411e5fbc1191a0a52ef\
        f69f2445df4f9b17ad2b417be66c3710
        """)

    struct Vector: Sendable, CustomTestStringConvertible {
        let name: String
        let key: String
        let ciphertext: String
        var testDescription: String { name }
    }

    static let vectors = [
        Vector(name: "SP 800-38A F.2.1 CBC-AES128", key: "2b7e151628aed2a6abf7158809cf4f3c",
               ciphertext: "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b273bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7"),
        Vector(name: "SP 800-38A F.2.5 CBC-AES256", key: "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
               ciphertext: "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b"),
    ]

    @Test(arguments: vectors)
    func nistKnownAnswers(_ vector: Vector) throws {
        let key = SecretBytes(copying: hex(vector.key))
        let expected = hex(vector.ciphertext)
        #expect(try AESCBC.encrypt(Self.plaintext, key: key, iv: Self.iv, padding: .none) == expected)
        #expect(try AESCBC.decrypt(expected, key: key, iv: Self.iv, padding: .none) == Self.plaintext)
        // With PKCS#7 a whole-block input gains one block of sixteen 0x10 bytes, and
        // the first blocks are the NIST ones.
        let padded = try AESCBC.encrypt(Self.plaintext, key: key, iv: Self.iv)
        #expect(padded.count == Self.plaintext.count + 16)
        #expect(Array(padded.prefix(expected.count)) == expected)
        #expect(try AESCBC.decrypt(padded, key: key, iv: Self.iv, padding: .none).suffix(16) == ArraySlice(repeating: 16, count: 16))
        #expect(try AESCBC.decrypt(padded, key: key, iv: Self.iv) == Self.plaintext)
    }

    @Test(arguments: [16, 32])
    func paddingRoundTripsForEveryLength(_ keyCount: Int) throws {
        let key = try SecretBytes(randomCount: keyCount)
        let iv = try SecureRandom.bytes(count: 16)
        for padding in [AESCBC.Padding.pkcs7, .pkcs7Multiple(32), .pkcs7Multiple(48)] {
            let unit = padding == .pkcs7 ? 16 : (padding == .pkcs7Multiple(32) ? 32 : 48)
            for length in 0...100 {
                let message = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ length) }
                let sealed = try AESCBC.encrypt(message, key: key, iv: iv, padding: padding)
                #expect(sealed.count % unit == 0 && sealed.count > length && sealed.count <= length + unit)
                // The pad bytes are the pad length, 1 to unit of them.
                let raw = try AESCBC.decrypt(sealed, key: key, iv: iv, padding: .none)
                let padCount = sealed.count - length
                #expect(raw.suffix(padCount).allSatisfy { Int($0) == padCount })
                #expect(try AESCBC.decrypt(sealed, key: key, iv: iv, padding: padding) == message)
            }
        }
    }

    @Test func swtpmPaddingIsToTheKeyLength() throws {
        // swtpm pads AES-256 data to 32 bytes: 3039 bytes become 3040 (one 0x01 byte),
        // 32 bytes become 64 (thirty-two 0x20 bytes).
        let key = try SecretBytes(randomCount: 32)
        let iv = [UInt8](repeating: 0, count: 16)
        #expect(try AESCBC.encrypt([UInt8](repeating: 9, count: 3039), key: key, iv: iv, padding: .pkcs7Multiple(32)).count == 3040)
        let full = try AESCBC.encrypt([UInt8](repeating: 9, count: 32), key: key, iv: iv, padding: .pkcs7Multiple(32))
        #expect(full.count == 64)
        #expect(try AESCBC.decrypt(full, key: key, iv: iv, padding: .none).suffix(32) == ArraySlice(repeating: 32, count: 32))
    }

    private func expectCode(_ code: CryptoError.Code, _ reasonPart: String? = nil,
                            sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected \(code), but the call succeeded", sourceLocation: sourceLocation)
        } catch let error as CryptoError {
            #expect(error.code == code, "got \(error)", sourceLocation: sourceLocation)
            if let reasonPart { #expect(error.reason.contains(reasonPart), "got \(error)", sourceLocation: sourceLocation) }
        } catch {
            Issue.record("expected CryptoError \(code), got \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: [0, 1, 15, 17, 24, 31, 33, 64])
    func wrongKeySizes(_ count: Int) throws {
        let key = try SecretBytes(randomCount: count)
        let iv = [UInt8](repeating: 0, count: 16)
        expectCode(.invalidKeySize) { _ = try AESCBC.encrypt([1, 2, 3], key: key, iv: iv) }
        expectCode(.invalidKeySize) { _ = try AESCBC.decrypt([UInt8](repeating: 0, count: 16), key: key, iv: iv) }
    }

    @Test(arguments: [0, 8, 12, 15, 17, 32])
    func wrongIVSizes(_ count: Int) throws {
        let key = try SecretBytes(randomCount: 16)
        let iv = [UInt8](repeating: 1, count: count)
        expectCode(.invalidNonceSize) { _ = try AESCBC.encrypt([1, 2, 3], key: key, iv: iv) }
        expectCode(.invalidNonceSize) { _ = try AESCBC.decrypt([UInt8](repeating: 0, count: 16), key: key, iv: iv) }
    }

    @Test func wrongInputSizes() throws {
        let key = try SecretBytes(randomCount: 32)
        let iv = [UInt8](repeating: 0, count: 16)
        expectCode(.invalidInput, "whole number") { _ = try AESCBC.encrypt([1, 2, 3], key: key, iv: iv, padding: .none) }
        expectCode(.invalidInput, "multiple") { _ = try AESCBC.decrypt([UInt8](repeating: 0, count: 17), key: key, iv: iv) }
        expectCode(.invalidInput, "multiple of 32") { _ = try AESCBC.decrypt([UInt8](repeating: 0, count: 48), key: key, iv: iv, padding: .pkcs7Multiple(32)) }
        expectCode(.truncatedInput) { _ = try AESCBC.decrypt([], key: key, iv: iv) }
        expectCode(.invalidInput, "padding unit") { _ = try AESCBC.encrypt([1], key: key, iv: iv, padding: .pkcs7Multiple(24)) }
        expectCode(.invalidInput, "padding unit") { _ = try AESCBC.encrypt([1], key: key, iv: iv, padding: .pkcs7Multiple(256)) }
        // No padding and no input is an empty message.
        #expect(try AESCBC.encrypt([], key: key, iv: iv, padding: .none).isEmpty)
    }

    /// Every possible last block: exactly the valid paddings decrypt, the rest are a
    /// typed bad-padding error.
    @Test(arguments: [16, 32])
    func badPaddingIsRefused(_ unit: Int) throws {
        let key = try SecretBytes(randomCount: 32)
        let iv = [UInt8](repeating: 0, count: 16)
        let padding: AESCBC.Padding = unit == 16 ? .pkcs7 : .pkcs7Multiple(unit)
        var accepted = 0, refused = 0
        for last in 0...255 {
            for filler in [UInt8(0), UInt8(last), UInt8(truncatingIfNeeded: last &- 1)] {
                // A plaintext whose final bytes are `filler` and whose last byte is `last`.
                var plain = [UInt8](repeating: filler, count: unit)
                plain[unit - 1] = UInt8(last)
                let sealed = try AESCBC.encrypt(plain, key: key, iv: iv, padding: .none)
                let valid = last >= 1 && last <= unit && (last == 1 || Int(filler) == last)
                do {
                    let opened = try AESCBC.decrypt(sealed, key: key, iv: iv, padding: padding)
                    #expect(valid, "last byte \(last), filler \(filler) was accepted")
                    #expect(opened.count == unit - last)
                    accepted += 1
                } catch let error as CryptoError {
                    #expect(!valid, "last byte \(last), filler \(filler) was refused")
                    #expect(error.code == .invalidInput && error.reason.contains("bad padding"))
                    refused += 1
                }
            }
        }
        #expect(accepted > 0 && refused > 0)
    }

    @Test func wrongKeyGivesBadPaddingOrGarbageNeverACrash() throws {
        let key = try SecretBytes(randomCount: 32)
        let other = try SecretBytes(randomCount: 32)
        let iv = try SecureRandom.bytes(count: 16)
        let sealed = try AESCBC.encrypt(Array("the TPM's permanent state".utf8), key: key, iv: iv, padding: .pkcs7Multiple(32))
        if let opened = try? AESCBC.decrypt(sealed, key: other, iv: iv, padding: .pkcs7Multiple(32)) {
            #expect(opened != Array("the TPM's permanent state".utf8))
        }
    }

    @Test func sha512KnownAnswers() throws {
        // FIPS 180-2 appendix C.1 ("abc") and the empty string.
        #expect(try SHA512.hash(Array("abc".utf8)) == hex("""
            ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
            2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f
            """))
        #expect(try SHA512.hash([]) == hex("""
            cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
            47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e
            """))
        let secret = try SHA512.hash(secret: SecretBytes(copying: Array("abc".utf8)))
        #expect(secret.count == 64)
        #expect(secret.constantTimeEquals(try SHA512.hash(Array("abc".utf8))))
        #expect(!"\(secret)".contains("dd"))
    }
}
