import GuestVaultCore
import GuestVaultCrypto

/// swtpm's state encryption: AES-CBC with padding to the key length and HMAC-SHA256 over
/// ciphertext and IV (v2 files), and the header-less form of swtpm before 0.2.
extension SwtpmStateFile {
    /// Checks the HMAC over ciphertext and IV, then decrypts.
    static func open(
        _ found: [Tag: Record], dataTag: Tag, ivTag: Tag, key: SwtpmKey, flag256: Bool, flagName: String, file: String
    ) throws -> [UInt8] {
        let expectedKeyBytes = flag256 ? 32 : 16
        let keyBytes = key.mode.keyByteCount
        guard keyBytes == expectedKeyBytes else {
            throw SwtpmFormatError(.wrongKeySize, file: file, offset: 4,
                                   "the data were written with a \(expectedKeyBytes * 8)-bit key (flag \(flagName) is \(flag256 ? "set" : "clear")), but the key given is \(keyBytes * 8)-bit (mode=\(key.mode.rawValue)); use mode=\(flag256 ? SwtpmKey.Mode.aes256CBC.rawValue : SwtpmKey.Mode.aes128CBC.rawValue)")
        }
        let hmac = found[.hmac]!
        let data = found[dataTag]!
        let iv = found[ivTag]
        guard hmac.value.count == hmacByteCount else {
            throw SwtpmFormatError(.badLength, file: file, offset: hmac.offset + 2,
                                   "the HMAC record holds \(hmac.value.count) bytes; HMAC-SHA256 is \(hmacByteCount)")
        }
        if let iv, iv.value.count != keyBytes {
            throw SwtpmFormatError(.badLength, file: file, offset: iv.offset + 2,
                                   "the IV record holds \(iv.value.count) bytes; swtpm's IV is as long as the key, \(keyBytes)")
        }
        guard !data.value.isEmpty, data.value.count % keyBytes == 0 else {
            throw SwtpmFormatError(.badLength, file: file, offset: data.offset + 2,
                                   "the encrypted data are \(data.value.count) bytes; padded data are a non-zero multiple of the key length, \(keyBytes)")
        }
        let ciphertext = Array(data.value)
        let ivBytes = iv.map { Array($0.value) } ?? []
        var mac = try HMACSHA256(key: key.secret)
        try mac.update(ciphertext)
        try mac.update(ivBytes)
        guard constantTimeEquals(try mac.finalize(), Array(hmac.value)) else {
            throw SwtpmFormatError(.authenticationFailed, file: file, offset: hmac.valueOffset,
                                   "the HMAC does not match: the key is wrong, or the file was changed or damaged. Nothing was decrypted")
        }
        // The cipher takes the first 16 bytes of the key-length IV; no IV record means zeros.
        let cipherIV = ivBytes.isEmpty ? [UInt8](repeating: 0, count: AESCBC.ivByteCount) : Array(ivBytes.prefix(AESCBC.ivByteCount))
        do {
            return try AESCBC.decrypt(ciphertext, key: key.secret, iv: cipherIV, padding: padding(for: key.mode))
        } catch let error as CryptoError {
            throw SwtpmFormatError(.badPadding, file: file, offset: data.valueOffset,
                                   "the data authenticate but do not decrypt to padded data; the writer was faulty",
                                   underlying: error)
        }
    }

    /// Encrypts `payload` as swtpm does: random IV as long as the key, AES-CBC with the
    /// IV's first 16 bytes and padding to the key length, HMAC-SHA256 over ciphertext and
    /// the whole IV, records in the order data, HMAC, IV.
    static func seal(_ payload: [UInt8], key: SwtpmKey, dataTag: Tag, ivTag: Tag) throws -> [UInt8] {
        let iv = try SecureRandom.bytes(count: key.mode.keyByteCount)
        let ciphertext = try AESCBC.encrypt(payload, key: key.secret, iv: Array(iv.prefix(AESCBC.ivByteCount)),
                                            padding: padding(for: key.mode))
        var mac = try HMACSHA256(key: key.secret)
        try mac.update(ciphertext)
        try mac.update(iv)
        let code = try mac.finalize()
        var out = ByteWriter(capacity: ciphertext.count + code.count + iv.count + 3 * recordHeaderByteCount)
        appendRecord(dataTag, ciphertext[...], to: &out)
        appendRecord(.hmac, code[...], to: &out)
        appendRecord(ivTag, iv[...], to: &out)
        return out.bytes
    }

    static func padding(for mode: SwtpmKey.Mode) -> AESCBC.Padding {
        mode == .aes128CBC ? .pkcs7 : .pkcs7Multiple(mode.keyByteCount)
    }

    // MARK: The header-less layout

    /// swtpm before 0.2: the whole file is AES-CBC (zero IV, padded to the key length)
    /// over SHA-256(data) || data.
    static func decodeHeaderlessEncrypted(_ bytes: [UInt8], file: String, key: SwtpmKey) throws -> Contents {
        let keyBytes = key.mode.keyByteCount
        let context = "the first byte is 0x\(hex(bytes[0])), not swtpm's v2 header (0x02), so this was read as a header-less encrypted file"
        guard bytes.count % keyBytes == 0, bytes.count >= digestByteCount + 1 else {
            throw SwtpmFormatError(.unsupportedVersion, file: file, offset: 0,
                                   "\(context), but it is \(bytes.count) bytes, not a multiple of the \(keyBytes)-byte key length. If the file is not encrypted, leave out --key/--pwdfile")
        }
        let plaintext: [UInt8]
        do {
            plaintext = try AESCBC.decrypt(bytes, key: key.secret, iv: [UInt8](repeating: 0, count: AESCBC.ivByteCount),
                                           padding: padding(for: key.mode))
        } catch {
            throw SwtpmFormatError(.badPadding, file: file, offset: 0,
                                   "\(context), and it does not decrypt with this key: wrong key, or the file is damaged",
                                   underlying: error)
        }
        guard plaintext.count > digestByteCount,
              constantTimeEquals(try SHA256.hash(Array(plaintext[digestByteCount...])), Array(plaintext[..<digestByteCount])) else {
            throw SwtpmFormatError(.authenticationFailed, file: file, offset: 0,
                                   "\(context), and its SHA-256 does not match after decryption: wrong key, or the file is damaged")
        }
        return Contents(payload: Array(plaintext[digestByteCount...]), layout: .headerless, flags: [],
                        encryption: key.mode, fileByteCount: bytes.count)
    }
}
