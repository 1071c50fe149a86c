#if canImport(Glibc)
import Glibc
#endif
public import GuestVaultCrypto
import GuestVaultSystem
import GuestVaultCore

/// The key swtpm encrypts its state files with, made the way swtpm 0.7 makes it from
/// its `--key` option: read from a key file (hex or binary), or derived from a
/// passphrase file (PBKDF2 or SHA-512). The key bytes stay in ``SecretBytes`` and never
/// print.
public struct SwtpmKey: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The cipher: swtpm's `mode=`. The key is as long as the mode says.
    public enum Mode: String, Sendable, CaseIterable, Codable {
        case aes128CBC = "aes-128-cbc"
        case aes256CBC = "aes-256-cbc"

        /// swtpm's default when `mode=` is not given.
        public static let swtpmDefault = Mode.aes128CBC

        public var keyByteCount: Int { self == .aes128CBC ? 16 : 32 }

        /// Accepts swtpm's names, including its alias "aes-cbc" for AES-128-CBC.
        public init?(swtpmName: String) {
            switch swtpmName {
            case "aes-128-cbc", "aes-cbc": self = .aes128CBC
            case "aes-256-cbc": self = .aes256CBC
            default: return nil
            }
        }
    }

    /// How a key file holds the key: swtpm's `format=` (default hex).
    public enum KeyFileFormat: String, Sendable, CaseIterable, Codable {
        /// Hex digits, optionally after "0x", optionally followed by whitespace (a newline).
        case hex
        /// The raw key bytes and nothing else.
        case binary
    }

    /// How a passphrase becomes a key: swtpm's `kdf=` (default pbkdf2).
    public enum KDF: String, Sendable, CaseIterable, Codable {
        /// PBKDF2-HMAC-SHA512, salt "swtpm", 1000 iterations.
        case pbkdf2
        /// The first key-length bytes of SHA-512(passphrase).
        case sha512
    }

    /// Where the key came from, for reports (no secret in it).
    public enum Origin: Sendable, Hashable, Codable {
        case keyFile(path: String, format: KeyFileFormat)
        case passphraseFile(path: String, kdf: KDF)
        case bytes
    }

    public let mode: Mode
    public let origin: Origin
    /// The key: 16 bytes for AES-128-CBC, 32 for AES-256-CBC. It is also swtpm's HMAC key.
    public let secret: SecretBytes

    /// A key from its bytes; their number must match `mode`.
    public init(secret: SecretBytes, mode: Mode, origin: Origin = .bytes) throws {
        guard secret.count == mode.keyByteCount else {
            throw SwtpmFormatError(.badKeyFile, file: origin.path ?? "(key)", offset: nil,
                                   "the key is \(secret.count * 8) bits, but mode=\(mode.rawValue) needs \(mode.keyByteCount * 8)")
        }
        self.secret = secret
        self.mode = mode
        self.origin = origin
    }

    /// swtpm's `--key` option value that makes swtpm use this key, when it came from a
    /// file (for starting swtpm on an exported directory).
    public var swtpmKeyArgument: String? {
        switch origin {
        case .keyFile(let path, let format): "file=\(path),format=\(format.rawValue),mode=\(mode.rawValue)"
        case .passphraseFile(let path, let kdf): "pwdfile=\(path),kdf=\(kdf.rawValue),mode=\(mode.rawValue)"
        case .bytes: nil
        }
    }

    public var description: String {
        switch origin {
        case .keyFile(let path, let format): "swtpm key (\(mode.rawValue), \(format.rawValue) key file \(path), redacted)"
        case .passphraseFile(let path, let kdf): "swtpm key (\(mode.rawValue), \(kdf.rawValue) of passphrase file \(path), redacted)"
        case .bytes: "swtpm key (\(mode.rawValue), redacted)"
        }
    }

    public var debugDescription: String { description }

    // MARK: Making keys as swtpm does

    /// Largest key file read: "0x", 64 hex digits and some whitespace fit many times over.
    static let keyFileLimit = 4096
    /// Largest passphrase file read.
    static let passphraseFileLimit = 1 << 20
    /// swtpm's PBKDF2 salt and iteration count.
    static let pbkdf2Salt = Array("swtpm".utf8)
    static let pbkdf2Iterations: UInt64 = 1000

    /// The key in a key file's bytes, read the way swtpm reads it (`file` names it in
    /// errors).
    public static func fromKeyFile(_ bytes: [UInt8], format: KeyFileFormat, mode: Mode, file: String) throws -> SwtpmKey {
        var bytes = bytes
        defer { zero(&bytes) }
        let origin = Origin.keyFile(path: file, format: format)
        switch format {
        case .binary:
            guard bytes.count == mode.keyByteCount else {
                throw SwtpmFormatError(.badKeyFile, file: file, offset: nil,
                                       "a binary key file for mode=\(mode.rawValue) holds exactly \(mode.keyByteCount) bytes; this one holds \(bytes.count)\(bytes.count >= 32 && bytes.allSatisfy { hexValue($0) != nil || isSpace($0) } ? " (it looks like a hex key: leave out format=binary)" : "")")
            }
            return try SwtpmKey(secret: SecretBytes(copying: bytes), mode: mode, origin: origin)
        case .hex:
            var key = [UInt8]()
            defer { zero(&key) }
            var index = 0
            if bytes.count >= 2 && bytes[0] == UInt8(ascii: "0") && bytes[1] == UInt8(ascii: "x") { index = 2 }
            var high: UInt8? = nil
            while index < bytes.count, let nibble = hexValue(bytes[index]) {
                if let h = high { key.append(h << 4 | nibble); high = nil } else { high = nibble }
                index += 1
            }
            let digits = key.count * 2 + (high == nil ? 0 : 1)
            if index < bytes.count && !isSpace(bytes[index]) {
                throw SwtpmFormatError(.badKeyFile, file: file, offset: index,
                                       "a hex key file holds hex digits (after an optional \"0x\") and then only whitespace; this byte is neither (its value is not shown: it may be key material)\(digits == 0 ? " (is it a binary key? then add format=binary)" : "")")
            }
            if let rest = bytes[index...].firstIndex(where: { !isSpace($0) }) {
                throw SwtpmFormatError(.badKeyFile, file: file, offset: rest,
                                       "more text follows the key's hex digits; a hex key file holds one key")
            }
            guard high == nil, digits == 2 * mode.keyByteCount else {
                let hint = digits == 64 ? "; a 256-bit key needs mode=aes-256-cbc" : digits == 32 ? "; a 128-bit key needs mode=aes-128-cbc" : ""
                throw SwtpmFormatError(.badKeyFile, file: file, offset: nil,
                                       "the key has \(digits) hex digits; mode=\(mode.rawValue) needs \(2 * mode.keyByteCount)\(hint)")
            }
            return try SwtpmKey(secret: SecretBytes(copying: key), mode: mode, origin: origin)
        }
    }

    /// The key swtpm derives from a passphrase file's bytes. The whole file is the
    /// passphrase, a final newline included.
    public static func fromPassphrase(_ passphrase: SecretBytes, kdf: KDF, mode: Mode, file: String) throws -> SwtpmKey {
        let origin = Origin.passphraseFile(path: file, kdf: kdf)
        switch kdf {
        case .pbkdf2:
            let key = try PasswordKDF.pbkdf2(passphrase: passphrase, salt: pbkdf2Salt, iterations: pbkdf2Iterations,
                                             hash: .sha512, outputByteCount: mode.keyByteCount)
            return try SwtpmKey(secret: key, mode: mode, origin: origin)
        case .sha512:
            let digest = try SHA512.hash(secret: passphrase)
            let key = digest.withUnsafeBytes { SecretBytes(copying: $0.prefix(mode.keyByteCount)) }
            return try SwtpmKey(secret: key, mode: mode, origin: origin)
        }
    }

    // MARK: Options

    /// A parsed `--key` or `--pwdfile` option: where the key comes from and how. Holds
    /// no secret; ``load()`` reads the file.
    public struct Option: Sendable, Hashable {
        public enum Source: Sendable, Hashable {
            case keyFile(String, KeyFileFormat)
            case passphraseFile(String, KDF)
        }

        public var source: Source
        public var mode: Mode
        /// swtpm's `remove=true`: delete the key or passphrase file once it has been used.
        public var remove: Bool

        public init(source: Source, mode: Mode = .swtpmDefault, remove: Bool = false) {
            self.source = source
            self.mode = mode
            self.remove = remove
        }

        public var path: String {
            switch source {
            case .keyFile(let path, _), .passphraseFile(let path, _): path
            }
        }

        /// Parses `FILE[,format=hex|binary][,mode=aes-128-cbc|aes-256-cbc][,remove=true|false]`.
        /// swtpm's own spellings are accepted too: `file=FILE,...`, and `pwdfile=FILE[,kdf=...]`
        /// for a passphrase file.
        public init(keyOption text: String) throws {
            try self.init(parsing: text, option: "--key", passphrase: false)
        }

        /// Parses `FILE[,kdf=pbkdf2|sha512][,mode=aes-128-cbc|aes-256-cbc][,remove=true|false]`
        /// (or `pwdfile=FILE,...`).
        public init(pwdfileOption text: String) throws {
            try self.init(parsing: text, option: "--pwdfile", passphrase: true)
        }

        private init(parsing text: String, option: String, passphrase defaultIsPassphrase: Bool) throws {
            func fail(_ reason: String) -> SwtpmFormatError {
                SwtpmFormatError(.badKeyOption, file: option, offset: nil, "\(reason) in `\(option) \(text)`")
            }
            var file: String?
            var isPassphrase = defaultIsPassphrase
            var settings: [String: String] = [:]
            for (index, part) in text.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
                guard let equals = part.firstIndex(of: "=") else {
                    guard index == 0, !part.isEmpty else { throw fail("`\(part)` is not name=value") }
                    file = String(part)
                    continue
                }
                let name = String(part[..<equals]), value = String(part[part.index(after: equals)...])
                guard !value.isEmpty else { throw fail("\(name)= has no value") }
                switch name {
                case "file" where !defaultIsPassphrase, "pwdfile":
                    guard file == nil else { throw fail("the file is given twice") }
                    file = value
                    isPassphrase = name == "pwdfile"
                case "format", "mode", "kdf", "remove":
                    guard settings[name] == nil else { throw fail("\(name)= is given twice") }
                    settings[name] = value
                default:
                    throw fail("unknown setting `\(name)` (known: \(defaultIsPassphrase ? "kdf" : "format"), mode, remove)")
                }
            }
            guard let file, !file.isEmpty else { throw fail("no file is named") }
            let mode: Mode
            if let name = settings["mode"] {
                guard let parsed = Mode(swtpmName: name) else { throw fail("unknown mode `\(name)` (aes-128-cbc or aes-256-cbc)") }
                mode = parsed
            } else {
                mode = .swtpmDefault
            }
            var remove = false
            if let value = settings["remove"] {
                switch value {
                case "true", "yes", "1": remove = true
                case "false", "no", "0": remove = false
                default: throw fail("remove= takes true or false")
                }
            }
            if isPassphrase {
                if settings["format"] != nil { throw fail("format= is for key files, not passphrase files") }
                let kdf: KDF
                if let name = settings["kdf"] {
                    guard let parsed = KDF(rawValue: name) else { throw fail("unknown kdf `\(name)` (pbkdf2 or sha512)") }
                    kdf = parsed
                } else {
                    kdf = .pbkdf2
                }
                self.init(source: .passphraseFile(file, kdf), mode: mode, remove: remove)
            } else {
                if settings["kdf"] != nil { throw fail("kdf= is for passphrase files (--pwdfile), not key files") }
                let format: KeyFileFormat
                if let name = settings["format"] {
                    guard let parsed = KeyFileFormat(rawValue: name) else { throw fail("unknown format `\(name)` (hex or binary)") }
                    format = parsed
                } else {
                    format = .hex
                }
                self.init(source: .keyFile(file, format), mode: mode, remove: remove)
            }
        }

        /// Reads the file and makes the key.
        public func load() throws -> SwtpmKey {
            switch source {
            case .keyFile(let path, let format):
                var bytes = try SwtpmKey.read(path, limit: SwtpmKey.keyFileLimit, what: "key file")
                defer { SwtpmKey.zero(&bytes) }
                return try SwtpmKey.fromKeyFile(bytes, format: format, mode: mode, file: path)
            case .passphraseFile(let path, let kdf):
                var bytes = try SwtpmKey.read(path, limit: SwtpmKey.passphraseFileLimit, what: "passphrase file")
                defer { SwtpmKey.zero(&bytes) }
                return try SwtpmKey.fromPassphrase(SecretBytes(copying: bytes), kdf: kdf, mode: mode, file: path)
            }
        }

        /// Deletes the key or passphrase file if `remove=true` was given.
        public func removeFileIfAsked() throws {
            guard remove else { return }
            do { try FileSystem.removeFile(path) } catch {
                throw SwtpmFormatError(.io, file: path, offset: nil, "could not remove the file as remove=true asks", underlying: error)
            }
        }
    }

    // MARK: Helpers

    static func read(_ path: String, limit: Int, what: String) throws -> [UInt8] {
        do {
            return try FileSystem.readFile(path, limit: limit)
        } catch let error as SystemError {
            throw SwtpmFormatError(error.errno == EFBIG ? .badKeyFile : .io, file: path, offset: nil,
                                   error.errno == EFBIG ? "the \(what) is larger than \(limit) bytes" : "cannot read the \(what)",
                                   underlying: error)
        }
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    static func isSpace(_ byte: UInt8) -> Bool {
        byte == 0x20 || (0x09...0x0d).contains(byte)
    }

    static func zero(_ bytes: inout [UInt8]) {
        for index in bytes.indices { bytes[index] = 0 }
    }
}

extension SwtpmKey.Origin {
    var path: String? {
        switch self {
        case .keyFile(let path, _), .passphraseFile(let path, _): path
        case .bytes: nil
        }
    }
}
