import GuestVaultCore
public import GuestVaultCrypto
import GuestVaultSystem
import Synchronization

/// The file vault's root key: 32 random bytes in `root.key` (mode 0600), optionally
/// wrapped under a passphrase with scrypt. The layout is in docs/KEYS.md.
public final class FileRootKey: RootKeyBackend {
    public let kind = "file"
    public let location: String
    /// Whether the key file is passphrase-protected.
    public let isPassphraseProtected: Bool
    private let context: Mutex<KBKDFContext>

    static let magic = Array("GVRK".utf8)
    static let version: UInt8 = 1
    static let headerCount = 8
    static let checksumCount = 32
    static let plainCount = headerCount + 32 + checksumCount
    static let protectedCount = headerCount + 4 + 32 + 40 + checksumCount
    static let fileLimit = 4096

    private init(key: SecretBytes, location: String, passphraseProtected: Bool) throws {
        self.location = location
        self.isPassphraseProtected = passphraseProtected
        context = Mutex(try KBKDFContext(key: key))
    }

    public func deriveBlock(label: [UInt8], context info: [UInt8]) throws -> SecretBytes {
        try context.withLock { try $0.deriveKey(label: label, context: info, outputByteCount: 32) }
    }

    // MARK: Creating

    /// Makes a new random root key and writes it to `path` (0600, atomically). With a
    /// passphrase, the key is wrapped under scrypt(passphrase) and the scrypt
    /// parameters are stored beside it.
    public static func create(
        at path: String, passphrase: SecretBytes?, scrypt: PasswordKDF.ScryptParameters = .interactive
    ) throws -> FileRootKey {
        let key = try SecretBytes(randomCount: 32)
        try write(key, to: path, passphrase: passphrase, scrypt: scrypt)
        return try FileRootKey(key: key, location: path, passphraseProtected: passphrase != nil)
    }

    /// Writes a given root key (for vectors, tests and migrations).
    public static func write(
        _ key: SecretBytes, to path: String, passphrase: SecretBytes?,
        scrypt: PasswordKDF.ScryptParameters = .interactive, salt: [UInt8]? = nil
    ) throws {
        guard key.count == 32 else {
            throw VaultError(.invalidArgument, subject: path, reason: "a root key is 32 bytes, not \(key.count)")
        }
        var bytes = try encode(key, passphrase: passphrase, scrypt: scrypt, salt: salt)
        defer { SecretFile.zero(&bytes) }
        do {
            // Never replaces: a root key that is there already may be the only copy.
            try DurableFile.write(bytes, to: path, mode: FileSystem.privateFileMode, .creatingNew)
        } catch {
            throw VaultError.file(path, "could not write the root key", error)
        }
    }

    static func encode(_ key: SecretBytes, passphrase: SecretBytes?, scrypt: PasswordKDF.ScryptParameters, salt: [UInt8]?) throws -> [UInt8] {
        var writer = ByteWriter(capacity: protectedCount)
        writer.raw(magic)
        writer.u8(version)
        writer.u8(passphrase == nil ? 0 : 1)
        writer.u16(0)
        if let passphrase {
            guard scrypt.n.nonzeroBitCount == 1, scrypt.n >= 2, scrypt.r <= 255, scrypt.p <= 255 else {
                throw VaultError(.invalidArgument, subject: "scrypt", reason: "N must be a power of two, r and p at most 255")
            }
            let salt = try salt ?? SecureRandom.bytes(count: 32)
            let wrappingKey = try PasswordKDF.scrypt(passphrase: passphrase, salt: salt, parameters: scrypt, outputByteCount: 32)
            let wrapped = try AESKeyWrap.wrapWithPadding(key, kek: wrappingKey)
            writer.u8(UInt8(scrypt.n.trailingZeroBitCount))
            writer.u8(UInt8(scrypt.r))
            writer.u8(UInt8(scrypt.p))
            writer.u8(0)
            writer.raw(salt)
            writer.raw(wrapped)
        } else {
            var plain = key.unsafeCopyOfBytes()
            writer.raw(plain)
            SecretFile.zero(&plain)
        }
        writer.raw(try SHA256.hash(writer.bytes))
        return writer.bytes
    }

    // MARK: Opening

    /// Reads `root.key`. Refuses a file that group or others can read or write, a
    /// truncated or corrupt file, and a wrong passphrase, each with a typed error naming
    /// the file.
    public static func open(at path: String, passphrase: SecretBytes?) throws -> FileRootKey {
        // An unprotected file holds the root key itself: the bytes are zeroed after use.
        var bytes = try SecretFile.readPrivate(path, what: "root key", limit: fileLimit,
                                               missing: VaultError(.vaultNotFound, subject: path, reason: "no root key file here; create a vault with `guestvault vault init`"))
        defer { SecretFile.zero(&bytes) }
        let (key, protected) = try decode(bytes, path: path, passphrase: passphrase)
        return try FileRootKey(key: key, location: path, passphraseProtected: protected)
    }

    static func decode(_ bytes: [UInt8], path: String, passphrase: SecretBytes?) throws -> (SecretBytes, Bool) {
        var reader = ByteReader(bytes, subject: path)
        let protection: UInt8
        do {
            guard try reader.array(4, "magic") == magic else {
                throw VaultError(.corrupt, subject: path, reason: "not a GuestVault root key file (bad magic)")
            }
            let fileVersion = try reader.u8("version")
            guard fileVersion == version else {
                throw VaultError(.corrupt, subject: path, reason: "root key format version \(fileVersion) is not supported (expected \(version))")
            }
            protection = try reader.u8("protection")
        } catch let error as ByteCodecError {
            throw VaultError(.corrupt, subject: path, reason: "not a GuestVault root key file (truncated at \(bytes.count) bytes)", underlying: error)
        }
        let expected: Int
        switch protection {
        case 0: expected = plainCount
        case 1: expected = protectedCount
        default: throw VaultError(.corrupt, subject: path, reason: "unknown protection kind \(protection) at offset 5")
        }
        guard bytes.count == expected else {
            throw VaultError(.corrupt, subject: path, reason: "root key file is \(bytes.count) bytes, expected \(expected): truncated or extended")
        }
        var check = try SHA256()
        try check.update(bytes, range: 0..<(expected - checksumCount))
        guard constantTimeEquals(try check.finalize(), Array(bytes[(expected - checksumCount)...])) else {
            throw VaultError(.corrupt, subject: path, reason: "root key file checksum does not match: the file was changed or damaged")
        }
        // The size and checksum are checked: the reads below cannot fail.
        reader = ByteReader(bytes, from: headerCount, to: expected - checksumCount, subject: path)
        if protection == 0 {
            return (SecretBytes(copying: try reader.take(32, "root key")), false)
        }
        guard let passphrase else {
            throw VaultError(.passphraseRequired, subject: path, reason: "the root key is passphrase-protected; give --passphrase-file")
        }
        let logN = try reader.u8("scrypt log2 N"), r = try reader.u8("scrypt r"), p = try reader.u8("scrypt p")
        try reader.skip(1, "reserved")
        guard (1...22).contains(logN), PasswordKDF.ScryptParameters(n: 1 << UInt64(logN), r: UInt32(r), p: UInt32(p)).problem == nil else {
            throw VaultError(.corrupt, subject: path, reason: "scrypt parameters out of range (log2 N \(logN), r \(r), p \(p))")
        }
        let salt = try reader.array(32, "salt")
        let wrapped = try reader.array(40, "wrapped root key")
        let wrappingKey = try PasswordKDF.scrypt(passphrase: passphrase, salt: salt,
                                                 parameters: .init(n: 1 << UInt64(logN), r: UInt32(r), p: UInt32(p)), outputByteCount: 32)
        do {
            return (try AESKeyWrap.unwrapWithPadding(wrapped, kek: wrappingKey), true)
        } catch let error as CryptoError where error.code == .authenticationFailure {
            throw VaultError(.wrongPassphrase, subject: path, reason: "the passphrase does not open this root key", underlying: error)
        }
    }
}
