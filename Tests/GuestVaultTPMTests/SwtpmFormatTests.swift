import Foundation
import GuestVaultCrypto
import GuestVaultTPM
import GuestVaultCore
import Testing

/// swtpm's state file format without swtpm: round trips, files built by hand from the
/// primitives, every header and record error, every truncation and bit flip of an
/// encrypted file, random bytes, and the key options and KDFs.
@Suite struct SwtpmFormatTests {
    /// A stand-in libtpms blob: TPM 2.0 blobs start with a big-endian u16 version.
    static let payload: [UInt8] = [0x00, 0x03, 0xab, 0x36, 0x47, 0x23] + (0..<34).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }

    static func key(_ mode: SwtpmKey.Mode) throws -> SwtpmKey {
        try SwtpmKey(secret: SecretBytes(randomCount: mode.keyByteCount), mode: mode)
    }

    static func u32(_ bytes: [UInt8], _ offset: Int) -> Int {
        bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) }
    }

    /// Runs `body`, which must throw a SwtpmFormatError with `code` (and `offset`, if
    /// given); returns it.
    @discardableResult
    static func expectError(
        _ code: SwtpmFormatError.Code, offset: Int? = nil, sourceLocation: Testing.SourceLocation = #_sourceLocation,
        _ body: () throws -> Void
    ) -> SwtpmFormatError? {
        do {
            try body()
            Issue.record("expected \(code), but it was accepted", sourceLocation: sourceLocation)
        } catch let error as SwtpmFormatError {
            #expect(error.code == code, "got \(error)", sourceLocation: sourceLocation)
            if let offset { #expect(error.offset == offset, "got \(error)", sourceLocation: sourceLocation) }
            #expect(error.description.hasPrefix(error.file), sourceLocation: sourceLocation)
            return error
        } catch {
            Issue.record("expected SwtpmFormatError \(code), got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
        }
        return nil
    }

    // MARK: Round trips and layout

    @Test func plainFileLayoutAndRoundTrip() throws {
        let file = try SwtpmStateFile.encode(Self.payload, key: nil)
        let total = 10 + 6 + Self.payload.count
        #expect(file.count == total)
        #expect(Array(file[0..<10]) == [2, 1, 0, 10, 0, 0, 0, 0, 0, UInt8(total)])
        #expect(Array(file[10..<16]) == [0, 1, 0, 0, 0, UInt8(Self.payload.count)])
        #expect(Array(file[16...]) == Self.payload)
        let contents = try SwtpmStateFile.decode(file, file: "tpm2-00.permall", key: nil)
        #expect(contents.payload == Self.payload)
        #expect(contents.layout == .v2 && contents.encryption == nil && contents.flags.isEmpty)
        #expect(contents.fileByteCount == file.count)
    }

    @Test(arguments: SwtpmKey.Mode.allCases)
    func encryptedFileLayoutAndRoundTrip(_ mode: SwtpmKey.Mode) throws {
        let key = try Self.key(mode)
        let n = mode.keyByteCount
        for length in [0, 1, 15, 16, 31, 32, 33, 1000] {
            let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0) }
            let file = try SwtpmStateFile.encode(payload, key: key)
            let padded = (length / n + 1) * n
            #expect(file.count == 10 + 6 + padded + 6 + 32 + 6 + n)
            #expect(file[0] == 2 && file[1] == 1)
            #expect(file[5] == (mode == .aes256CBC ? 0x09 : 0x01))
            #expect(Self.u32(file, 6) == file.count)
            // Records in swtpm's order: encrypted data, HMAC, IV (as long as the key).
            #expect(Array(file[10..<12]) == [0, 2] && Self.u32(file, 12) == padded)
            let hmacAt = 16 + padded
            #expect(Array(file[hmacAt..<(hmacAt + 2)]) == [0, 3] && Self.u32(file, hmacAt + 2) == 32)
            let ivAt = hmacAt + 38
            #expect(Array(file[ivAt..<(ivAt + 2)]) == [0, 6] && Self.u32(file, ivAt + 2) == n)
            let contents = try SwtpmStateFile.decode(file, file: "f", key: key)
            #expect(contents.payload == payload && contents.encryption == mode && contents.layout == .v2)
            // A fresh IV each time.
            #expect(try SwtpmStateFile.encode(payload, key: key) != file)
        }
    }

    /// A file assembled from AES-CBC and HMAC-SHA256 directly, as docs/SWTPM.md
    /// describes it, reads back; so does one without an IV record (zero IV).
    @Test(arguments: SwtpmKey.Mode.allCases)
    func handBuiltEncryptedFileReads(_ mode: SwtpmKey.Mode) throws {
        let key = try Self.key(mode)
        let n = mode.keyByteCount
        for withIV in [true, false] {
            let iv = withIV ? try SecureRandom.bytes(count: n) : []
            var padded = Self.payload
            let pad = n - padded.count % n
            padded += [UInt8](repeating: UInt8(pad), count: pad)
            let ciphertext = try AESCBC.encrypt(padded, key: key.secret, iv: withIV ? Array(iv.prefix(16)) : [UInt8](repeating: 0, count: 16),
                                                padding: .none)
            let mac = try HMACSHA256.authenticationCode(for: ciphertext + iv, key: key.secret)
            func record(_ tag: UInt8, _ value: [UInt8]) -> [UInt8] {
                [0, tag] + withUnsafeBytes(of: UInt32(value.count).bigEndian, Array.init) + value
            }
            let body = record(2, ciphertext) + record(3, mac) + (withIV ? record(6, iv) : [])
            let flags: UInt8 = mode == .aes256CBC ? 0x09 : 0x01
            let file = [2, 1, 0, 10, 0, flags] + withUnsafeBytes(of: UInt32(10 + body.count).bigEndian, Array.init) + body
            #expect(try SwtpmStateFile.decode(file, file: "hand-built", key: key).payload == Self.payload)
        }
    }

    @Test func headerlessFilesRead() throws {
        // Plain: the libtpms blob itself.
        let plain = try SwtpmStateFile.decode(Self.payload, file: "old", key: nil)
        #expect(plain.payload == Self.payload && plain.layout == .headerless && plain.encryption == nil)
        // Encrypted: AES-CBC, zero IV, padded to the key length, over SHA-256(data) || data.
        for mode in SwtpmKey.Mode.allCases {
            let key = try Self.key(mode)
            let inner = try SHA256.hash(Self.payload) + Self.payload
            let padding: AESCBC.Padding = mode == .aes128CBC ? .pkcs7 : .pkcs7Multiple(32)
            var file = try AESCBC.encrypt(inner, key: key.secret, iv: [UInt8](repeating: 0, count: 16), padding: padding)
            let contents = try SwtpmStateFile.decode(file, file: "old", key: key)
            #expect(contents.payload == Self.payload && contents.layout == .headerless && contents.encryption == mode)
            // The wrong key, or a changed byte, is refused.
            do {
                _ = try SwtpmStateFile.decode(file, file: "old", key: try Self.key(mode))
                Issue.record("a header-less file opened with the wrong key")
            } catch let error as SwtpmFormatError {
                #expect(error.code == .badPadding || error.code == .authenticationFailed)
            }
            file[file.count - 2 * 16] ^= 1
            do {
                _ = try SwtpmStateFile.decode(file, file: "old", key: key)
                Issue.record("a changed header-less file was accepted")
            } catch let error as SwtpmFormatError {
                #expect(error.code == .badPadding || error.code == .authenticationFailed)
            }
        }
    }

    @Test func controlChannelBlobsRoundTrip() throws {
        let stateKey = try Self.key(.aes256CBC)
        let migrationKey = try Self.key(.aes128CBC)
        for key in [nil, stateKey] {
            for migration in [nil, migrationKey] {
                let blob = try SwtpmStateFile.encodeBlob(Self.payload, key: key, migrationKey: migration)
                #expect(blob[5] & 0x04 != 0)
                let contents = try SwtpmStateFile.decode(blob, file: "blob", key: key, migrationKey: migration, form: .controlChannelBlob)
                #expect(contents.payload == Self.payload)
                // It is not a state file, and a migration-encrypted one needs its key.
                Self.expectError(.badHeader, offset: 4) { _ = try SwtpmStateFile.decode(blob, file: "blob", key: key) }
                if migration != nil {
                    Self.expectError(.keyRequired) {
                        _ = try SwtpmStateFile.decode(blob, file: "blob", key: key, form: .controlChannelBlob)
                    }
                }
            }
        }
        let file = try SwtpmStateFile.encode(Self.payload, key: nil)
        Self.expectError(.badHeader, offset: 4) { _ = try SwtpmStateFile.decode(file, file: "f", key: nil, form: .controlChannelBlob) }
    }

    // MARK: Refusals

    @Test func keyMismatchesAreRefused() throws {
        let key128 = try Self.key(.aes128CBC), key256 = try Self.key(.aes256CBC)
        let plain = try SwtpmStateFile.encode(Self.payload, key: nil)
        let file128 = try SwtpmStateFile.encode(Self.payload, key: key128)
        let file256 = try SwtpmStateFile.encode(Self.payload, key: key256)
        Self.expectError(.notEncrypted, offset: 4) { _ = try SwtpmStateFile.decode(plain, file: "f", key: key128) }
        Self.expectError(.keyRequired, offset: 4) { _ = try SwtpmStateFile.decode(file128, file: "f", key: nil) }
        let needs256 = Self.expectError(.keyRequired, offset: 4) { _ = try SwtpmStateFile.decode(file256, file: "f", key: nil) }
        #expect(needs256?.reason.contains("aes-256-cbc") == true)
        let wrongSize = Self.expectError(.wrongKeySize, offset: 4) { _ = try SwtpmStateFile.decode(file256, file: "f", key: key128) }
        #expect(wrongSize?.reason.contains("mode=aes-256-cbc") == true)
        Self.expectError(.wrongKeySize, offset: 4) { _ = try SwtpmStateFile.decode(file128, file: "f", key: key256) }
        Self.expectError(.authenticationFailed, offset: file256.count - 38 - 32) {
            _ = try SwtpmStateFile.decode(file256, file: "f", key: try Self.key(.aes256CBC))
        }
    }

    @Test func headerErrorsNameTheField() throws {
        let good = try SwtpmStateFile.encode(Self.payload, key: nil)
        func changed(_ edit: (inout [UInt8]) -> Void) -> [UInt8] { var copy = good; edit(&copy); return copy }
        let name = "tpm2-00.permall"
        Self.expectError(.truncated, offset: 0) { _ = try SwtpmStateFile.decode([], file: name, key: nil) }
        Self.expectError(.truncated, offset: 5) { _ = try SwtpmStateFile.decode(Array(good.prefix(5)), file: name, key: nil) }
        Self.expectError(.unsupportedVersion, offset: 0) { _ = try SwtpmStateFile.decode(changed { $0[0] = 3 }, file: name, key: nil) }
        Self.expectError(.unsupportedVersion, offset: 1) { _ = try SwtpmStateFile.decode(changed { $0[1] = 3 }, file: name, key: nil) }
        Self.expectError(.unsupportedVersion, offset: 1) { _ = try SwtpmStateFile.decode(changed { $0[1] = 0 }, file: name, key: nil) }
        Self.expectError(.badHeader, offset: 2) { _ = try SwtpmStateFile.decode(changed { $0[3] = 12 }, file: name, key: nil) }
        Self.expectError(.badHeader, offset: 4) { _ = try SwtpmStateFile.decode(changed { $0[5] = 0x20 }, file: name, key: nil) }
        Self.expectError(.badHeader, offset: 4) { _ = try SwtpmStateFile.decode(changed { $0[4] = 0x01 }, file: name, key: nil) }
        Self.expectError(.badHeader, offset: 4) { _ = try SwtpmStateFile.decode(changed { $0[5] = 0x08 }, file: name, key: nil) }
        Self.expectError(.badHeader, offset: 4) { _ = try SwtpmStateFile.decode(changed { $0[5] = 0x02 }, file: name, key: nil) }
        Self.expectError(.truncated, offset: good.count) { _ = try SwtpmStateFile.decode(changed { $0[9] += 1 }, file: name, key: nil) }
        Self.expectError(.trailingBytes, offset: good.count) { _ = try SwtpmStateFile.decode(good + [0], file: name, key: nil) }
        Self.expectError(.unsupportedVersion, offset: 0) { _ = try SwtpmStateFile.decode(changed { $0[0] = 0x41 }, file: name, key: nil) }
        Self.expectError(.tooLarge) {
            _ = try SwtpmStateFile.decode([UInt8](repeating: 0, count: SwtpmStateFile.maximumFileByteCount + 1), file: name, key: nil)
        }
        let error = Self.expectError(.unsupportedVersion) { _ = try SwtpmStateFile.decode(changed { $0[0] = 3 }, file: name, key: nil) }
        #expect(error?.description.hasPrefix("tpm2-00.permall: at byte 0: ") == true)
    }

    @Test func recordErrorsNameTheOffset() throws {
        func file(_ records: [UInt8], flags: UInt8 = 0) -> [UInt8] {
            [2, 1, 0, 10, 0, flags] + withUnsafeBytes(of: UInt32(10 + records.count).bigEndian, Array.init) + records
        }
        func record(_ tag: UInt16, _ value: [UInt8], length: UInt32? = nil) -> [UInt8] {
            withUnsafeBytes(of: tag.bigEndian, Array.init) + withUnsafeBytes(of: (length ?? UInt32(value.count)).bigEndian, Array.init) + value
        }
        let data = record(1, Self.payload)
        Self.expectError(.unknownTag, offset: 10) { _ = try SwtpmStateFile.decode(file(record(8, [1])), file: "f", key: nil) }
        Self.expectError(.unknownTag, offset: 10) { _ = try SwtpmStateFile.decode(file(record(0, [])), file: "f", key: nil) }
        Self.expectError(.unknownTag, offset: 10 + data.count) { _ = try SwtpmStateFile.decode(file(data + record(0xffff, [])), file: "f", key: nil) }
        Self.expectError(.duplicateRecord, offset: 10 + data.count) { _ = try SwtpmStateFile.decode(file(data + data), file: "f", key: nil) }
        Self.expectError(.truncated, offset: 12) {
            _ = try SwtpmStateFile.decode(file(record(1, Self.payload, length: UInt32(Self.payload.count + 1))), file: "f", key: nil)
        }
        Self.expectError(.truncated, offset: 12) {
            _ = try SwtpmStateFile.decode(file(record(1, Self.payload, length: 0xffff_ffff)), file: "f", key: nil)
        }
        Self.expectError(.trailingBytes, offset: 10 + data.count) { _ = try SwtpmStateFile.decode(file(data + [0, 1, 0]), file: "f", key: nil) }
        Self.expectError(.unexpectedRecord, offset: 10) { _ = try SwtpmStateFile.decode(file(record(3, [UInt8](repeating: 0, count: 32))), file: "f", key: nil) }
        Self.expectError(.missingRecord, offset: 10) { _ = try SwtpmStateFile.decode(file([]), file: "f", key: nil) }
        Self.expectError(.unexpectedRecord, offset: 10 + data.count) {
            _ = try SwtpmStateFile.decode(file(data + record(6, [UInt8](repeating: 0, count: 16))), file: "f", key: nil)
        }
        Self.expectError(.unexpectedRecord, offset: 10) { _ = try SwtpmStateFile.decode(file(record(4, data)), file: "f", key: nil) }

        // Encrypted files: lengths of the HMAC, the IV and the data; a plain record.
        let key = try Self.key(.aes128CBC)
        let good = try SwtpmStateFile.encode(Self.payload, key: key)
        let records = try SwtpmStateFile.parseRecords(good[10...], file: "f")
        #expect(records.map(\.tag) == [.encryptedData, .hmac, .ivForEncryptedData])
        let ct = Array(records[0].value), mac = Array(records[1].value), iv = Array(records[2].value)
        Self.expectError(.badLength, offset: 10 + 6 + ct.count + 2) {
            _ = try SwtpmStateFile.decode(file(record(2, ct) + record(3, Array(mac.prefix(31))) + record(6, iv), flags: 1), file: "f", key: key)
        }
        Self.expectError(.badLength, offset: 10 + 6 + ct.count + 38 + 2) {
            _ = try SwtpmStateFile.decode(file(record(2, ct) + record(3, mac) + record(6, iv + [0]), flags: 1), file: "f", key: key)
        }
        Self.expectError(.badLength, offset: 12) {
            _ = try SwtpmStateFile.decode(file(record(2, Array(ct.dropLast())) + record(3, mac) + record(6, iv), flags: 1), file: "f", key: key)
        }
        Self.expectError(.badLength, offset: 12) {
            _ = try SwtpmStateFile.decode(file(record(2, []) + record(3, mac) + record(6, iv), flags: 1), file: "f", key: key)
        }
        Self.expectError(.missingRecord) { _ = try SwtpmStateFile.decode(file(record(2, ct) + record(6, iv), flags: 1), file: "f", key: key) }
        Self.expectError(.unexpectedRecord, offset: 10) {
            _ = try SwtpmStateFile.decode(file(data + record(2, ct) + record(3, mac) + record(6, iv), flags: 1), file: "f", key: key)
        }
        // Records in another order still read (swtpm looks them up by tag).
        #expect(try SwtpmStateFile.decode(file(record(6, iv) + record(3, mac) + record(2, ct), flags: 1), file: "f", key: key).payload == Self.payload)
    }

    @Test(arguments: SwtpmKey.Mode.allCases)
    func badPaddingBehindAValidHMACIsRefused(_ mode: SwtpmKey.Mode) throws {
        // A faulty writer: the HMAC is right, but the plaintext is not padded.
        let key = try Self.key(mode)
        let n = mode.keyByteCount
        let iv = try SecureRandom.bytes(count: n)
        let ciphertext = try AESCBC.encrypt([UInt8](repeating: 0, count: n), key: key.secret, iv: Array(iv.prefix(16)), padding: .none)
        let mac = try HMACSHA256.authenticationCode(for: ciphertext + iv, key: key.secret)
        func record(_ tag: UInt8, _ value: [UInt8]) -> [UInt8] { [0, tag, 0, 0, 0, UInt8(value.count)] + value }
        let body = record(2, ciphertext) + record(3, mac) + record(6, iv)
        let file = [2, 1, 0, 10, 0, mode == .aes256CBC ? 9 : 1, 0, 0, 0, UInt8(10 + body.count)] + body
        Self.expectError(.badPadding, offset: 16) { _ = try SwtpmStateFile.decode(file, file: "f", key: key) }
    }

    // MARK: Sweeps

    /// Every prefix and every single-bit flip of small encrypted files is refused with a
    /// SwtpmFormatError.
    @Test func everyTruncationAndBitFlipOfAnEncryptedFileIsRefused() throws {
        var tried = 0, accepted = 0, truncations = 0
        for mode in SwtpmKey.Mode.allCases {
            let key = try Self.key(mode)
            let file = try SwtpmStateFile.encode(Self.payload, key: key)
            for length in 0..<file.count {
                truncations += 1
                Self.expectError(.truncated) {
                    _ = try SwtpmStateFile.decode(Array(file.prefix(length)), file: "tpm2-00.permall", key: key)
                }
            }
            for index in file.indices {
                for bit in 0..<8 {
                    var changed = file
                    changed[index] ^= 1 << bit
                    tried += 1
                    do {
                        _ = try SwtpmStateFile.decode(changed, file: "tpm2-00.permall", key: key)
                        accepted += 1
                        Issue.record("\(mode): flipping bit \(bit) of byte \(index) was accepted")
                    } catch let error as SwtpmFormatError {
                        #expect(error.file == "tpm2-00.permall")
                        #expect(error.offset != nil, "no offset for byte \(index) bit \(bit): \(error)")
                    }
                }
            }
        }
        print("bit flips: swtpm file: \(tried) tried, \(accepted) accepted")
        print("truncations: swtpm file: \(truncations) tried, 0 accepted")
        #expect(accepted == 0)
        // Plain files have no integrity check, but every truncation is still refused.
        let plain = try SwtpmStateFile.encode(Self.payload, key: nil)
        for length in 0..<plain.count {
            Self.expectError(.truncated) { _ = try SwtpmStateFile.decode(Array(plain.prefix(length)), file: "f", key: nil) }
        }
    }

    /// Random bytes and randomly damaged files, with and without keys: each decode either
    /// returns or throws a SwtpmFormatError, and never crashes. Bounded and seeded.
    @Test func randomInputNeverCrashes() throws {
        var generator = SwtpmFuzzGenerator(seed: 0x5157_504d_2007)
        let keys: [SwtpmKey?] = [nil, try Self.key(.aes128CBC), try Self.key(.aes256CBC)]
        let seeds = try keys.map { try SwtpmStateFile.encode(Self.payload, key: $0) } +
            [try SwtpmStateFile.encodeBlob(Self.payload, key: keys[2], migrationKey: keys[1])]
        var outcomes = [String: Int]()
        for round in 0..<6000 {
            var bytes: [UInt8]
            switch round % 3 {
            case 0:
                bytes = (0..<Int.random(in: 0...200, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                if !bytes.isEmpty && Bool.random(using: &generator) { bytes[0] = [0, 2][Int.random(in: 0...1, using: &generator)] }
            default:
                bytes = seeds[Int.random(in: 0..<seeds.count, using: &generator)]
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    let index = Int.random(in: 0..<bytes.count, using: &generator)
                    switch Int.random(in: 0...3, using: &generator) {
                    case 0: bytes[index] = UInt8.random(in: 0...255, using: &generator)
                    case 1: bytes.insert(UInt8.random(in: 0...255, using: &generator), at: index)
                    case 2: bytes.remove(at: index)
                    default: bytes[index] = [0x00, 0xff, 0x7f, 0x80][Int.random(in: 0...3, using: &generator)]
                    }
                    if bytes.isEmpty { break }
                }
            }
            let key = keys[Int.random(in: 0..<keys.count, using: &generator)]
            let form: SwtpmStateFile.Form = Bool.random(using: &generator) ? .stateFile : .controlChannelBlob
            do {
                _ = try SwtpmStateFile.decode(bytes, file: "random", key: key, migrationKey: keys[1], form: form)
                outcomes["accepted", default: 0] += 1
            } catch let error as SwtpmFormatError {
                outcomes[error.code.name, default: 0] += 1
            }
        }
        print("random swtpm inputs: \(outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))")
        #expect(outcomes.values.reduce(0, +) == 6000)
    }

    // MARK: Keys

    @Test func keyOptionsParseAsSwtpmDoes() throws {
        typealias Option = SwtpmKey.Option
        #expect(try Option(keyOption: "/k") == Option(source: .keyFile("/k", .hex), mode: .aes128CBC))
        #expect(try Option(keyOption: "/k,mode=aes-256-cbc,format=binary") == Option(source: .keyFile("/k", .binary), mode: .aes256CBC))
        #expect(try Option(keyOption: "file=/k,mode=aes-cbc,remove=true") == Option(source: .keyFile("/k", .hex), mode: .aes128CBC, remove: true))
        #expect(try Option(keyOption: "pwdfile=/p,kdf=sha512,mode=aes-256-cbc") == Option(source: .passphraseFile("/p", .sha512), mode: .aes256CBC))
        #expect(try Option(pwdfileOption: "/p") == Option(source: .passphraseFile("/p", .pbkdf2), mode: .aes128CBC))
        #expect(try Option(pwdfileOption: "/p,kdf=sha512") == Option(source: .passphraseFile("/p", .sha512), mode: .aes128CBC))
        #expect(try Option(pwdfileOption: "pwdfile=/p,mode=aes-256-cbc") == Option(source: .passphraseFile("/p", .pbkdf2), mode: .aes256CBC))
        for bad in ["", ",mode=aes-128-cbc", "/k,mode=aes-192-cbc", "/k,format=base64", "/k,kdf=sha512", "/k,mode=aes-128-cbc,mode=aes-256-cbc",
                    "/k,colour=blue", "/k,mode=", "/k,remove=maybe", "/k,/l", "file=/k,file=/l"] {
            Self.expectError(.badKeyOption) { _ = try Option(keyOption: bad) }
        }
        for bad in ["", "/p,kdf=scrypt", "/p,format=hex", "file=/p"] {
            Self.expectError(.badKeyOption) { _ = try Option(pwdfileOption: bad) }
        }
    }

    @Test func hexAndBinaryKeyFiles() throws {
        let digits = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        let expected = SecretBytes(copying: Array(0..<32))
        for text in [digits, digits + "\n", "0x" + digits + "\n", digits.uppercased() + "\r\n", digits + "  \n\n"] {
            let key = try SwtpmKey.fromKeyFile(Array(text.utf8), format: .hex, mode: .aes256CBC, file: "k")
            #expect(key.secret == expected && key.mode == .aes256CBC)
        }
        let short = try SwtpmKey.fromKeyFile(Array(digits.prefix(32).utf8), format: .hex, mode: .aes128CBC, file: "k")
        #expect(short.secret == SecretBytes(copying: Array(0..<16)))
        let hint = Self.expectError(.badKeyFile) { _ = try SwtpmKey.fromKeyFile(Array(digits.utf8), format: .hex, mode: .aes128CBC, file: "k") }
        #expect(hint?.reason.contains("mode=aes-256-cbc") == true)
        Self.expectError(.badKeyFile) { _ = try SwtpmKey.fromKeyFile(Array(digits.prefix(32).utf8), format: .hex, mode: .aes256CBC, file: "k") }
        Self.expectError(.badKeyFile) { _ = try SwtpmKey.fromKeyFile(Array(digits.dropLast().utf8), format: .hex, mode: .aes256CBC, file: "k") }
        Self.expectError(.badKeyFile, offset: 64) { _ = try SwtpmKey.fromKeyFile(Array((digits + "zz").utf8), format: .hex, mode: .aes256CBC, file: "k") }
        Self.expectError(.badKeyFile, offset: 65) { _ = try SwtpmKey.fromKeyFile(Array((digits + "\nff").utf8), format: .hex, mode: .aes256CBC, file: "k") }
        Self.expectError(.badKeyFile) { _ = try SwtpmKey.fromKeyFile([], format: .hex, mode: .aes128CBC, file: "k") }
        // Binary: exactly the key's bytes.
        #expect(try SwtpmKey.fromKeyFile(Array(0..<32), format: .binary, mode: .aes256CBC, file: "k").secret == expected)
        Self.expectError(.badKeyFile) { _ = try SwtpmKey.fromKeyFile(Array(0..<16), format: .binary, mode: .aes256CBC, file: "k") }
        Self.expectError(.badKeyFile) { _ = try SwtpmKey.fromKeyFile(Array(0..<33), format: .binary, mode: .aes256CBC, file: "k") }
        // Keys never print.
        let printed = "\(short) \(String(reflecting: short)) \(short.secret)"
        #expect(!printed.contains("0001020304") && printed.contains("redacted"))
    }

    @Test func passphraseKDFKnownAnswers() throws {
        // Computed independently (Python hashlib) for the passphrase file
        // "correct horse battery staple\n": the newline is part of the passphrase.
        let passphrase = SecretBytes(copying: Array("correct horse battery staple\n".utf8))
        let cases: [(SwtpmKey.KDF, SwtpmKey.Mode, String)] = [
            (.pbkdf2, .aes256CBC, "a1d3850e5a1805f07bc139ea1ef5b740ba5d20229e06e7318691d73e56ae1dee"),
            (.pbkdf2, .aes128CBC, "a1d3850e5a1805f07bc139ea1ef5b740"),
            (.sha512, .aes256CBC, "b3bf1950a302702ce2661a76c1c69f9d0abb92ad61b65f4c96a09b683d7d2f16"),
            (.sha512, .aes128CBC, "b3bf1950a302702ce2661a76c1c69f9d"),
        ]
        for (kdf, mode, hex) in cases {
            let key = try SwtpmKey.fromPassphrase(passphrase, kdf: kdf, mode: mode, file: "p")
            #expect(key.secret.constantTimeEquals(bytes(fromHex: hex)!), "\(kdf) \(mode)")
        }
    }

    @Test func optionsLoadFilesAndRemoveOnlyWhenAsked() throws {
        let dir = TemporaryDirectory("swtpm-key")
        try Data("000102030405060708090a0b0c0d0e0f\n".utf8).write(to: URL(fileURLWithPath: dir.file("k.hex")))
        try Data("correct horse battery staple\n".utf8).write(to: URL(fileURLWithPath: dir.file("pass")))
        let hexKey = try SwtpmKey.Option(keyOption: dir.file("k.hex")).load()
        #expect(hexKey.secret == SecretBytes(copying: Array(0..<16)))
        #expect(hexKey.swtpmKeyArgument == "file=\(dir.file("k.hex")),format=hex,mode=aes-128-cbc")
        let option = try SwtpmKey.Option(pwdfileOption: "\(dir.file("pass")),mode=aes-256-cbc,remove=true")
        let derived = try option.load()
        #expect(derived.secret.constantTimeEquals(bytes(fromHex: "a1d3850e5a1805f07bc139ea1ef5b740ba5d20229e06e7318691d73e56ae1dee")!))
        try SwtpmKey.Option(keyOption: dir.file("k.hex")).removeFileIfAsked()
        #expect(FileManager.default.fileExists(atPath: dir.file("k.hex")))
        try option.removeFileIfAsked()
        #expect(!FileManager.default.fileExists(atPath: dir.file("pass")))
        Self.expectError(.io) { _ = try SwtpmKey.Option(keyOption: dir.file("missing")).load() }
    }
}

/// A small seeded generator, so random tests repeat.
fileprivate struct SwtpmFuzzGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
