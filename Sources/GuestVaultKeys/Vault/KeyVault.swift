public import FoundationEssentials
import GuestVaultCore
public import GuestVaultCrypto
import GuestVaultSystem
import Synchronization

/// A key vault: a directory (0700) that names where the root key is, keeps the
/// rollback counters and the X25519 recipient key, and derives every per-VM key.
///
/// ```
/// DIR/               0700
///   vault.json       0600  kind of vault, root key id, PKCS#11 token details
///   root.key         0600  file vault only: the root key (optionally passphrase-wrapped)
///   recipient.key    0600  the vault's X25519 recipient key, sealed (made on first use)
///   ca.key           0600  the host CA's private key and certificate, sealed (made on first use)
///   ca.pem           0644  the host CA's certificate, for checking EK certificates
///   counters/        0700  one rollback counter file per VM
/// ```
public final class KeyVault: Sendable {
    /// The vault directory.
    public let path: String
    /// Where the root key lives.
    public let backend: any RootKeyBackend
    /// The root key's public identifier (16 bytes).
    public let rootKeyID: [UInt8]
    /// The rollback counters.
    public let counters: RollbackCounters
    let configuration: VaultConfiguration
    private let recipient = Mutex<X25519.PrivateKey?>(nil)

    static let configurationName = "vault.json"
    static let rootKeyName = "root.key"
    static let recipientName = "recipient.key"
    static let countersName = "counters"

    private init(path: String, backend: any RootKeyBackend, configuration: VaultConfiguration) throws {
        self.path = path
        self.backend = backend
        self.configuration = configuration
        let id = try backend.rootKeyID()
        guard hexString(id) == configuration.rootKeyID else {
            throw VaultError(.corrupt, subject: path,
                             reason: "the root key (\(backend.location)) is not the one this vault was made with: its id is \(hexString(id)), vault.json says \(configuration.rootKeyID)")
        }
        rootKeyID = id
        let countersPath = FileSystem.join(path, Self.countersName)
        do {
            try FileSystem.createDirectory(countersPath)
        } catch {
            throw VaultError.file(countersPath, "could not create the counters directory", error)
        }
        counters = try RollbackCounters(directory: countersPath, backend: backend)
    }

    // MARK: Creating

    /// Creates a file vault at `path` (a new or empty directory) with a new random root
    /// key (or `importing` a given one, for migrations and vectors), optionally
    /// passphrase-protected.
    public static func createFileVault(
        at path: String, passphrase: SecretBytes? = nil, scrypt: PasswordKDF.ScryptParameters = .interactive,
        importing rootKey: SecretBytes? = nil
    ) throws -> KeyVault {
        try prepareDirectory(path)
        let rootPath = FileSystem.join(path, rootKeyName)
        let backend: FileRootKey
        if let rootKey {
            try FileRootKey.write(rootKey, to: rootPath, passphrase: passphrase, scrypt: scrypt)
            backend = try FileRootKey.open(at: rootPath, passphrase: passphrase)
        } else {
            backend = try FileRootKey.create(at: rootPath, passphrase: passphrase, scrypt: scrypt)
        }
        let configuration = VaultConfiguration(
            backend: "file", rootKeyID: hexString(try backend.rootKeyID()), created: timestamp(),
            passphraseProtected: passphrase != nil, pkcs11: nil)
        try configuration.save(to: FileSystem.join(path, configurationName))
        return try KeyVault(path: path, backend: backend, configuration: configuration)
    }

    /// Creates a PKCS#11 vault at `path`: the root key is a non-extractable secret key
    /// object labelled `keyLabel` on the token, found or generated there.
    public static func createPKCS11Vault(
        at path: String, module: String, token: String, pinFile: String, keyLabel: String = "guestvault-root"
    ) throws -> KeyVault {
        try prepareDirectory(path)
        let module = absolute(module)
        let backend = try PKCS11RootKey.open(module: module, tokenLabel: token, pinFile: pinFile,
                                             keyLabel: keyLabel, createIfMissing: true)
        let configuration = VaultConfiguration(
            backend: "pkcs11", rootKeyID: hexString(try backend.rootKeyID()), created: timestamp(),
            passphraseProtected: nil,
            pkcs11: .init(module: module, token: token, keyLabel: keyLabel, pinFile: absolute(pinFile)))
        try configuration.save(to: FileSystem.join(path, configurationName))
        return try KeyVault(path: path, backend: backend, configuration: configuration)
    }

    /// Opens the vault at `path`. A passphrase-protected file vault needs `passphrase`.
    public static func open(at path: String, passphrase: SecretBytes? = nil) throws -> KeyVault {
        guard FileSystem.exists(path) else {
            throw VaultError(.vaultNotFound, subject: path, reason: "no vault directory here; create one with `guestvault vault init --vault \(path)`")
        }
        // The directory, the directories above it and every file in it: owned by this
        // user or root, not writable by others (checked on every open).
        try TrustedPath.checkVaultDirectory(path)
        let configuration = try VaultConfiguration.load(from: FileSystem.join(path, configurationName))
        let backend: any RootKeyBackend
        switch configuration.backend {
        case "file":
            backend = try FileRootKey.open(at: FileSystem.join(path, rootKeyName), passphrase: passphrase)
        case "pkcs11":
            guard let p = configuration.pkcs11 else {
                throw VaultError(.corrupt, subject: FileSystem.join(path, configurationName), reason: "a pkcs11 vault without token details")
            }
            backend = try PKCS11RootKey.open(module: p.module, tokenLabel: p.token, pinFile: p.pinFile,
                                             keyLabel: p.keyLabel, createIfMissing: false)
        default:
            throw VaultError(.corrupt, subject: FileSystem.join(path, configurationName), reason: "unknown backend \"\(configuration.backend)\"")
        }
        return try KeyVault(path: path, backend: backend, configuration: configuration)
    }

    private static func prepareDirectory(_ path: String) throws {
        if FileSystem.exists(FileSystem.join(path, configurationName)) {
            throw VaultError(.alreadyExists, subject: path, reason: "a vault already exists here; nothing was changed")
        }
        do {
            if try !FileSystem.createDirectory(path) {
                guard FileSystem.isDirectory(path) else {
                    throw VaultError(.invalidArgument, subject: path, reason: "exists and is not a directory")
                }
                guard try FileManager.default.contentsOfDirectory(atPath: path).isEmpty else {
                    throw VaultError(.alreadyExists, subject: path, reason: "the directory is not empty; give a new or empty directory")
                }
                try FileSystem.setMode(path, FileSystem.privateDirectoryMode)
            }
            try TrustedPath.checkVaultDirectory(path)
        } catch let error as VaultError {
            throw error
        } catch {
            throw VaultError.file(path, "could not create the vault directory", error)
        }
    }

    // MARK: Keys

    /// The key-encryption key of `vm` at key `epoch`:
    /// SP 800-108 counter KDF (HMAC-SHA256) of the root key with label
    /// "GuestVault v1 KEK" and context `uuid(16) || epoch(u32 BE)`.
    public func kek(vm: UUID, epoch: UInt32) throws -> SecretBytes {
        try backend.deriveBlock(label: KeyLabels.kek, context: KeyLabels.kekContext(vm: vm, epoch: epoch))
    }

    /// The vault's X25519 recipient key (for recovery slots and transfers), made on
    /// first use and kept sealed in `recipient.key` under a key derived from the root.
    public func recipientKey() throws -> X25519.PrivateKey {
        try recipient.withLock { cached in
            if let cached { return cached }
            let key = try RecipientKeyFile.loadOrCreate(at: FileSystem.join(path, Self.recipientName), backend: backend, rootKeyID: rootKeyID)
            cached = key
            return key
        }
    }

    /// Whether a recipient key has been made yet.
    public var hasRecipientKey: Bool { FileSystem.exists(FileSystem.join(path, Self.recipientName)) }

    /// What `guestvault vault status` prints.
    public func status() throws -> VaultStatus {
        let countersPath = FileSystem.join(path, Self.countersName)
        let vms = ((try? FileManager.default.contentsOfDirectory(atPath: countersPath)) ?? []).filter { $0.hasSuffix(".gen") }.count
        var recipientHex: String?
        if hasRecipientKey { recipientHex = hexString(try recipientKey().publicKey.rawRepresentation) }
        return VaultStatus(
            path: path, backend: configuration.backend, rootKeyID: hexString(rootKeyID), location: backend.location,
            created: configuration.created, passphraseProtected: configuration.passphraseProtected ?? false,
            pkcs11Token: configuration.pkcs11?.token, pkcs11Module: configuration.pkcs11?.module,
            pkcs11KeyLabel: configuration.pkcs11?.keyLabel,
            recipientPublicKey: recipientHex, trackedVMs: vms)
    }

    private static func timestamp() -> String {
        Date().formatted(.iso8601)
    }

    private static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileSystem.join(FileManager.default.currentDirectoryPath, path)
    }
}

/// A vault's state, as `guestvault vault status --json` prints it.
public struct VaultStatus: Codable, Sendable, Equatable {
    public let path: String
    public let backend: String
    public let rootKeyID: String
    public let location: String
    public let created: String
    public let passphraseProtected: Bool
    public let pkcs11Token: String?
    public let pkcs11Module: String?
    public let pkcs11KeyLabel: String?
    public let recipientPublicKey: String?
    public let trackedVMs: Int
}
