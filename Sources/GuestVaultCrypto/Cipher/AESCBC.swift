internal import CLibCrypto

/// AES-CBC with a 128-bit or 256-bit key (chosen by the key's length), for formats of
/// other programs that use it (swtpm's state files). GuestVault's own formats use
/// ``AESGCM``: CBC gives confidentiality only, so whoever reads CBC data must check a
/// MAC over the ciphertext before calling ``decrypt(_:key:iv:padding:)``.
///
/// OpenSSL does the block cipher with its own padding turned off; the padding is added
/// and checked here, so that the rule is the same for every padding length.
public enum AESCBC {
    public static let blockByteCount = 16
    public static let ivByteCount = 16
    /// Key lengths accepted: AES-128 and AES-256.
    public static let keyByteCounts = [16, 32]

    /// How the plaintext is padded to whole blocks.
    public enum Padding: Sendable, Hashable {
        /// None: the plaintext must already be a whole number of 16-byte blocks.
        case none
        /// PKCS#7 to the 16-byte block: 1 to 16 bytes, each holding the pad length.
        case pkcs7
        /// The PKCS#7 rule stretched to a multiple of `unit` bytes (a multiple of 16, at
        /// most 240): 1 to `unit` bytes, each holding the pad length. swtpm pads to the key
        /// length, so its AES-256 files use a unit of 32.
        case pkcs7Multiple(Int)

        /// The padding unit in bytes, or nil for no padding.
        var unit: Int? {
            switch self {
            case .none: nil
            case .pkcs7: AESCBC.blockByteCount
            case .pkcs7Multiple(let unit): unit
            }
        }
    }

    /// Encrypts `plaintext` under `key` (16 or 32 bytes) with the 16-byte `iv`, after
    /// padding it as `padding` says.
    public static func encrypt(_ plaintext: [UInt8], key: SecretBytes, iv: [UInt8], padding: Padding = .pkcs7) throws -> [UInt8] {
        let operation = "\(name(key)) encrypt"
        let cipher = try checkArguments(key: key, iv: iv, padding: padding, operation)
        var input = plaintext
        defer { cleanse(&input) }
        if let unit = padding.unit {
            let padCount = unit - plaintext.count % unit
            input.append(contentsOf: repeatElement(UInt8(padCount), count: padCount))
        } else if plaintext.count % blockByteCount != 0 {
            throw CryptoError(.invalidInput, operation: operation,
                              reason: "the plaintext is \(plaintext.count) bytes, not a whole number of \(blockByteCount)-byte blocks, and no padding was asked for")
        }
        return try run(cipher, encrypting: true, key: key, iv: iv, input: input, operation)
    }

    /// Decrypts `ciphertext` under `key` (16 or 32 bytes) with the 16-byte `iv` and
    /// removes the padding. A malformed padding throws ``CryptoError/Code/invalidInput``
    /// and returns nothing of the plaintext. The padding is checked in constant time, but
    /// that alone does not make CBC safe against changed ciphertexts: check a MAC first.
    public static func decrypt(_ ciphertext: [UInt8], key: SecretBytes, iv: [UInt8], padding: Padding = .pkcs7) throws -> [UInt8] {
        let operation = "\(name(key)) decrypt"
        let cipher = try checkArguments(key: key, iv: iv, padding: padding, operation)
        let unit = padding.unit ?? blockByteCount
        guard ciphertext.count % unit == 0 else {
            throw CryptoError(.invalidInput, operation: operation,
                              reason: "the ciphertext is \(ciphertext.count) bytes, not a multiple of \(unit)")
        }
        guard padding.unit == nil || !ciphertext.isEmpty else {
            throw CryptoError(.truncatedInput, operation: operation,
                              reason: "the ciphertext is empty; padded data is at least \(unit) bytes")
        }
        var plaintext = try run(cipher, encrypting: false, key: key, iv: iv, input: ciphertext, operation)
        guard padding.unit != nil else { return plaintext }
        guard let padCount = paddingLength(plaintext, unit: unit) else {
            cleanse(&plaintext)
            throw CryptoError(.invalidInput, operation: operation,
                              reason: "bad padding after decryption: wrong key, wrong IV, or the ciphertext was changed")
        }
        // Shrinking keeps the storage; the dropped padding bytes are not secret.
        plaintext.removeLast(padCount)
        return plaintext
    }

    // MARK: Checks

    static func name(_ key: SecretBytes) -> String {
        key.count == 32 ? "AES-256-CBC" : key.count == 16 ? "AES-128-CBC" : "AES-CBC"
    }

    /// Checks sizes and returns the fetched cipher for the key's length.
    static func checkArguments(key: SecretBytes, iv: [UInt8], padding: Padding, _ operation: String) throws -> OpaquePointer {
        let algorithm: OpaquePointer?
        switch key.count {
        case 16: algorithm = Algorithms.shared.aes128CBC
        case 32: algorithm = Algorithms.shared.aes256CBC
        default:
            throw CryptoError(.invalidKeySize, operation: operation,
                              reason: "key is \(key.count) bytes; AES-CBC here takes 16 (AES-128) or 32 (AES-256)")
        }
        guard iv.count == ivByteCount else {
            throw CryptoError(.invalidNonceSize, operation: operation,
                              reason: "IV is \(iv.count) bytes; AES-CBC takes \(ivByteCount)")
        }
        if case .pkcs7Multiple(let unit) = padding {
            guard unit > 0, unit % blockByteCount == 0, unit <= 240 else {
                throw CryptoError(.invalidInput, operation: operation,
                                  reason: "padding unit \(unit) is not a multiple of \(blockByteCount) between 16 and 240")
            }
        }
        return try Algorithms.require(algorithm, key.count == 32 ? "AES-256-CBC" : "AES-128-CBC", operation)
    }

    /// The padding length if the last `unit` bytes of `plaintext` end in valid padding,
    /// computed without branching on the secret bytes.
    static func paddingLength(_ plaintext: [UInt8], unit: Int) -> Int? {
        guard plaintext.count >= unit, let last = plaintext.last else { return nil }
        let padCount = Int(last)
        // bad stays 0 only if 1 <= padCount <= unit and each of the last padCount bytes
        // equals padCount.
        var bad = UInt(0)
        bad |= UInt(bitPattern: (padCount - 1) >> (Int.bitWidth - 1)) // padCount == 0
        bad |= UInt(bitPattern: (unit - padCount) >> (Int.bitWidth - 1)) // padCount > unit
        for distance in 1...unit {
            let byte = plaintext[plaintext.count - distance]
            // inPad is all ones when distance <= padCount.
            let inPad = ~UInt(bitPattern: (padCount - distance) >> (Int.bitWidth - 1))
            bad |= inPad & UInt(byte ^ last)
        }
        return bad == 0 ? padCount : nil
    }

    static func cleanse(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { raw in
            if let base = raw.baseAddress, raw.count > 0 { OPENSSL_cleanse(base, raw.count) }
        }
    }

    // MARK: The EVP calls

    /// Runs the cipher without EVP padding over whole blocks.
    static func run(
        _ cipher: OpaquePointer, encrypting: Bool, key: SecretBytes, iv: [UInt8], input: [UInt8], _ operation: String
    ) throws -> [UInt8] {
        precondition(input.count % blockByteCount == 0)
        guard let ctx = EVP_CIPHER_CTX_new() else {
            throw OpenSSL.error(.libraryFailure, operation, "EVP_CIPHER_CTX_new failed")
        }
        // EVP_CIPHER_CTX_free cleanses the key schedule.
        defer { EVP_CIPHER_CTX_free(ctx) }
        let initialized = key.withUnsafeBytes { k in
            iv.withUnsafeBytes { v in
                let keyPointer = k.baseAddress!.assumingMemoryBound(to: UInt8.self)
                let ivPointer = v.baseAddress!.assumingMemoryBound(to: UInt8.self)
                return encrypting ? EVP_EncryptInit_ex2(ctx, cipher, keyPointer, ivPointer, nil)
                                  : EVP_DecryptInit_ex2(ctx, cipher, keyPointer, ivPointer, nil)
            }
        }
        try OpenSSL.check(initialized, operation, encrypting ? "EVP_EncryptInit_ex2" : "EVP_DecryptInit_ex2")
        try OpenSSL.check(EVP_CIPHER_CTX_set_padding(ctx, 0), operation, "EVP_CIPHER_CTX_set_padding")
        var output = [UInt8](repeating: 0, count: input.count)
        do {
            try input.withUnsafeBytes { source in
                try output.withUnsafeMutableBytes { destination in
                    var offset = 0
                    var produced: Int32 = 0
                    while offset < source.count {
                        let step = min(source.count - offset, AESGCM.maximumUpdate)
                        let out = destination.baseAddress!.advanced(by: offset).assumingMemoryBound(to: UInt8.self)
                        let inp = source.baseAddress!.advanced(by: offset).assumingMemoryBound(to: UInt8.self)
                        let status = encrypting ? EVP_EncryptUpdate(ctx, out, &produced, inp, Int32(step))
                                                : EVP_DecryptUpdate(ctx, out, &produced, inp, Int32(step))
                        try OpenSSL.check(status, operation, encrypting ? "EVP_EncryptUpdate" : "EVP_DecryptUpdate")
                        guard Int(produced) == step else {
                            throw OpenSSL.error(.libraryFailure, operation, "the cipher returned \(produced) bytes for \(step)")
                        }
                        offset += step
                    }
                    // Without padding and with whole blocks, the final call produces nothing.
                    let finished = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 2 * blockByteCount) { scratch in
                        encrypting ? EVP_EncryptFinal_ex(ctx, scratch.baseAddress, &produced)
                                   : EVP_DecryptFinal_ex(ctx, scratch.baseAddress, &produced)
                    }
                    try OpenSSL.check(finished, operation, encrypting ? "EVP_EncryptFinal_ex" : "EVP_DecryptFinal_ex")
                }
            }
        } catch {
            cleanse(&output)
            throw error
        }
        return output
    }
}
