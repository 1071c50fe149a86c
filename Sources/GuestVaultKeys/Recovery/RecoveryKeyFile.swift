import GuestVaultCore
public import GuestVaultCrypto
import GuestVaultSystem

/// An offline recovery key: an X25519 private key in a file of its own (0600), kept
/// away from the host, optionally sealed under a passphrase. Its public half goes into
/// containers as a recipient slot (`create --recovery-recipient`); the file opens them
/// when the vault is lost (every verb's `--recovery-key FILE`). docs/KEYS.md §6.
///
/// ```
/// 0   4   magic "GVRK"
/// 4   1   version 1
/// 5   1   protection: 0 none, 1 passphrase (scrypt)
/// 6   2   zero
/// protection 0 (48 bytes):
/// 8   32  private key
/// 40  8   first 8 bytes of SHA-256(bytes 0..<40)
/// protection 1 (104 bytes):
/// 8   1   log2 N, 9 r, 10 p, 11 zero
/// 12  32  salt
/// 44  12  nonce
/// 56  48  AES-256-GCM(scrypt(passphrase, salt), private key) and tag; AAD = bytes 0..<56
/// ```
public enum RecoveryKeyFile {
    static let magic = Array("GVRK".utf8)
    static let version: UInt8 = 1
    static let plainCount = 48
    static let protectedCount = 104
    static let checkCount = 8

    /// Makes a new recovery key, writes it to `path` (which must not exist; 0600,
    /// published complete or not at all) and returns its public half.
    public static func create(
        at path: String, passphrase: SecretBytes?, parameters: PasswordKDF.ScryptParameters = .interactive
    ) throws -> X25519.PublicKey {
        let key = try X25519.PrivateKey()
        try write(key, to: path, passphrase: passphrase, parameters: parameters)
        return key.publicKey
    }

    /// Writes `key` as a recovery key file at `path` (which must not exist; 0600). For
    /// ``create(at:passphrase:parameters:)`` and the vectors.
    public static func write(
        _ key: X25519.PrivateKey, to path: String, passphrase: SecretBytes?, parameters: PasswordKDF.ScryptParameters = .interactive
    ) throws {
        let bytes = try encode(key, passphrase: passphrase, parameters: parameters)
        do {
            try DurableFile.write(bytes, to: path, mode: FileSystem.privateFileMode, .creatingNew)
        } catch let error as SystemError where error.code == .fileExists {
            throw VaultError(.alreadyExists, subject: path, reason: "a file already exists here; a recovery key is never overwritten", underlying: error)
        } catch {
            throw VaultError.file(path, "could not write the recovery key", error)
        }
    }

    /// Reads the recovery key at `path`: a regular file of this user or root that no one
    /// else can read or write, never followed through a symlink.
    public static func load(at path: String, passphrase: SecretBytes?) throws -> X25519.PrivateKey {
        var bytes = try SecretFile.readPrivate(path, what: "recovery key", limit: 4096, tooLarge: .corrupt,
                                               missing: VaultError(.vaultNotFound, subject: path, reason: "no recovery key file here"))
        defer { SecretFile.zero(&bytes) }
        return try decode(bytes, passphrase: passphrase, subject: path)
    }

    /// Whether the file's bytes say a passphrase protects it (without opening it).
    public static func needsPassphrase(at path: String) throws -> Bool {
        var bytes = try SecretFile.readPrivate(path, what: "recovery key", limit: 4096, tooLarge: .corrupt,
                                               missing: VaultError(.vaultNotFound, subject: path, reason: "no recovery key file here"))
        defer { SecretFile.zero(&bytes) }
        return bytes.count > 5 && bytes[5] == 1
    }

    /// Parses recovery key file bytes (hostile input; the checks of ``load(at:passphrase:)``
    /// without the file's). For the fuzzers and vectors.
    public static func parse(_ bytes: [UInt8], passphrase: SecretBytes?, subject: String = "recovery key") throws -> X25519.PrivateKey {
        try decode(bytes, passphrase: passphrase, subject: subject)
    }

    // MARK: Bytes

    /// The file's bytes. `salt` and `nonce` are for vectors only.
    static func encode(
        _ key: X25519.PrivateKey, passphrase: SecretBytes?, parameters: PasswordKDF.ScryptParameters = .interactive,
        salt: [UInt8]? = nil, nonce: [UInt8]? = nil
    ) throws -> [UInt8] {
        var plain = key.rawRepresentation.unsafeCopyOfBytes()
        defer { SecretFile.zero(&plain) }
        var writer = ByteWriter(capacity: protectedCount)
        writer.raw(magic)
        writer.u8(version)
        guard let passphrase else {
            writer.u8(0)
            writer.raw([0, 0])
            writer.raw(plain)
            writer.raw(Array(try SHA256.hash(writer.bytes).prefix(checkCount)))
            return writer.bytes
        }
        guard passphrase.count > 0 else {
            throw VaultError(.invalidArgument, subject: "recovery key", reason: "the passphrase is empty")
        }
        guard parameters.n.nonzeroBitCount == 1, parameters.n >= 2, parameters.r <= 255, parameters.p <= 255, parameters.problem == nil else {
            throw VaultError(.invalidArgument, subject: "recovery key",
                             reason: "scrypt N must be a power of two, r and p at most 255\(parameters.problem.map { ": " + $0 } ?? "")")
        }
        writer.u8(1)
        writer.raw([0, 0])
        writer.raw([UInt8(parameters.n.trailingZeroBitCount), UInt8(parameters.r), UInt8(parameters.p), 0])
        let salt = try salt ?? SecureRandom.bytes(count: 32)
        let nonce = try nonce ?? SecureRandom.bytes(count: AESGCM.nonceByteCount)
        writer.raw(salt)
        writer.raw(nonce)
        let wrappingKey = try PasswordKDF.scrypt(passphrase: passphrase, salt: salt, parameters: parameters, outputByteCount: 32)
        writer.raw(try AESGCM.seal(plain, key: wrappingKey, nonce: nonce, authenticating: writer.bytes))
        return writer.bytes
    }

    /// Parses the file's bytes as hostile input: size for the protection, magic,
    /// version, zero bytes, checksum or tag, scrypt parameters in range.
    static func decode(_ bytes: [UInt8], passphrase: SecretBytes?, subject: String) throws -> X25519.PrivateKey {
        func corrupt(_ reason: String, _ cause: (any Error & Sendable)? = nil) -> VaultError {
            VaultError(.corrupt, subject: subject, reason: reason, underlying: cause)
        }
        var reader = ByteReader(bytes, subject: subject)
        let header: [UInt8]
        do { header = try reader.array(8, "recovery key header") } catch {
            throw corrupt("not a recovery key file: \(bytes.count) bytes is shorter than its header", error)
        }
        guard Array(header[0..<4]) == magic else { throw corrupt("not a recovery key file (magic is not GVRK)") }
        guard header[4] == version else { throw corrupt("recovery key file version \(header[4]) is not supported (only \(version))") }
        guard header[6] == 0, header[7] == 0 else { throw corrupt("the reserved header bytes are not zero") }
        switch header[5] {
        case 0:
            guard bytes.count == plainCount else { throw corrupt("an unprotected recovery key file is \(plainCount) bytes, not \(bytes.count)") }
            let check = try SHA256.hash(Array(bytes[0..<40])).prefix(checkCount)
            guard constantTimeEquals(Array(check), Array(bytes[40..<48])) else {
                throw corrupt("the recovery key's checksum does not match: the file is damaged")
            }
            return try privateKey(SecretBytes(copying: bytes[8..<40]), subject: subject)
        case 1:
            guard bytes.count == protectedCount else { throw corrupt("a passphrase-protected recovery key file is \(protectedCount) bytes, not \(bytes.count)") }
            let log2N = bytes[8], r = bytes[9], p = bytes[10]
            guard bytes[11] == 0, (1...22).contains(log2N) else { throw corrupt("the scrypt parameters are out of range (log2 N \(log2N))") }
            let parameters = PasswordKDF.ScryptParameters(n: 1 << UInt64(log2N), r: UInt32(r), p: UInt32(p))
            if let problem = parameters.problem { throw corrupt("the scrypt parameters are out of range: \(problem)") }
            guard let passphrase else {
                throw VaultError(.passphraseRequired, subject: subject,
                                 reason: "this recovery key is protected by a passphrase; give it with --recovery-passphrase-file FILE")
            }
            let salt = Array(bytes[12..<44]), nonce = Array(bytes[44..<56]), sealed = Array(bytes[56..<104])
            let wrappingKey = try PasswordKDF.scrypt(passphrase: passphrase, salt: salt, parameters: parameters, outputByteCount: 32)
            var raw: [UInt8]
            do {
                raw = try AESGCM.open(sealed, key: wrappingKey, nonce: nonce, authenticating: Array(bytes[0..<56]))
            } catch {
                throw VaultError(.wrongPassphrase, subject: subject,
                                 reason: "the passphrase does not open this recovery key (or the file was changed)", underlying: error)
            }
            defer { SecretFile.zero(&raw) }
            return try privateKey(SecretBytes(copying: raw), subject: subject)
        default:
            throw corrupt("unknown protection \(header[5]) (0 none, 1 passphrase)")
        }
    }

    private static func privateKey(_ raw: SecretBytes, subject: String) throws -> X25519.PrivateKey {
        do {
            return try X25519.PrivateKey(rawRepresentation: raw)
        } catch {
            throw VaultError(.corrupt, subject: subject, reason: "the stored private key is not a valid X25519 key", underlying: error)
        }
    }
}
