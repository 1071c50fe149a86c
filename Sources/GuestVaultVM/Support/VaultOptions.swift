public import ArgumentParser
import FoundationEssentials
import Glibc
public import GuestVaultCrypto
public import GuestVaultKeys
import GuestVaultSystem

/// `--vault DIR` (or GUESTVAULT_VAULT) and `--passphrase-file F` (or
/// GUESTVAULT_PASSPHRASE_FILE), shared by every verb that uses a vault.
public struct VaultOptions: ParsableArguments {
    public init() {}

    @Option(name: .customLong("vault"), help: ArgumentHelp(
        "The key vault directory (default: $GUESTVAULT_VAULT).", valueName: "dir"))
    public var vaultPath: String?

    @Option(name: .customLong("passphrase-file"), help: ArgumentHelp(
        "A file holding the vault's passphrase, if it has one (default: $GUESTVAULT_PASSPHRASE_FILE). Mode must be 0600 or stricter.",
        valueName: "file"))
    public var passphraseFile: String?

    @Option(name: .customLong("recovery-key"), help: ArgumentHelp(
        "An offline recovery key file (`guestvault recovery-key new`) that opens the container's recovery slot; with it the vault may be left out. Repeatable. Verbs that need the vault itself refuse it.",
        valueName: "file"))
    public var recoveryKeyFiles: [String] = []

    @Option(name: .customLong("recovery-passphrase-file"), help: ArgumentHelp(
        "A file holding the recovery key's passphrase, if it has one (mode 0600).", valueName: "file"))
    public var recoveryPassphraseFile: String?

    /// The same choices as plain values (what the verbs act on).
    public var selection: VaultSelection {
        VaultSelection(vaultPath: vaultPath, passphraseFile: passphraseFile, recoveryKeyFiles: recoveryKeyFiles,
                       recoveryPassphraseFile: recoveryPassphraseFile)
    }

    public func resolvedPath() throws -> String { try selection.resolvedPath() }
    public func passphrase() throws -> SecretBytes? { try selection.passphrase() }
    public func open() throws -> KeyVault { try selection.open() }
    public func openVault() throws -> KeyVault { try selection.openVault() }
    public var namesVault: Bool { selection.namesVault }
    public func recoveryKeys() throws -> [X25519.PrivateKey] { try selection.recoveryKeys() }
    public func credentials() throws -> UnlockCredentials { try selection.credentials() }
}

/// The vault a verb uses, and the recovery keys it may use instead: ``VaultOptions`` as
/// plain values (also read without ArgumentParser, see ``ServeSettings/quickParse(_:)``).
public struct VaultSelection: Equatable, Sendable {
    public var vaultPath: String?
    public var passphraseFile: String?
    public var recoveryKeyFiles: [String] = []
    public var recoveryPassphraseFile: String?

    public init(vaultPath: String? = nil, passphraseFile: String? = nil, recoveryKeyFiles: [String] = [], recoveryPassphraseFile: String? = nil) {
        self.vaultPath = vaultPath
        self.passphraseFile = passphraseFile
        self.recoveryKeyFiles = recoveryKeyFiles
        self.recoveryPassphraseFile = recoveryPassphraseFile
    }

    /// The vault directory, from the option or the environment.
    public func resolvedPath() throws -> String {
        if let vaultPath { return vaultPath }
        if let fromEnvironment = Environment.value("GUESTVAULT_VAULT"), !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        throw ValidationError("no vault given: pass --vault DIR or set GUESTVAULT_VAULT")
    }

    /// The passphrase, if a passphrase file was given.
    public func passphrase() throws -> SecretBytes? {
        let file = passphraseFile ?? Environment.value("GUESTVAULT_PASSPHRASE_FILE")
        guard let file, !file.isEmpty else { return nil }
        return try readSecretFile(file, what: "passphrase")
    }

    /// Opens the vault, for a verb that uses the vault alone: a --recovery-key given to
    /// such a verb is refused rather than ignored.
    public func open() throws -> KeyVault {
        guard recoveryKeyFiles.isEmpty else {
            throw ValidationError("this verb works with the vault only; --recovery-key is not used here (give the container to a vault first: `guestvault rekey --recovery-key FILE --to-vault DIR STATE`)")
        }
        return try openVault()
    }

    /// Opens the vault whether or not recovery keys were given too.
    public func openVault() throws -> KeyVault {
        try KeyVault.open(at: resolvedPath(), passphrase: passphrase())
    }

    /// Whether a vault was named (option or environment).
    public var namesVault: Bool {
        vaultPath != nil || !(Environment.value("GUESTVAULT_VAULT") ?? "").isEmpty
    }

    /// The recovery keys given with --recovery-key.
    public func recoveryKeys() throws -> [X25519.PrivateKey] {
        guard !recoveryKeyFiles.isEmpty else { return [] }
        let passphrase = try recoveryPassphraseFile.map { try readSecretFile($0, what: "recovery key passphrase") }
        return try recoveryKeyFiles.map { try RecoveryKeyFile.load(at: $0, passphrase: passphrase) }
    }

    /// What opens a container: the vault (required unless a recovery key is given) and
    /// any recovery keys.
    public func credentials() throws -> UnlockCredentials {
        let keys = try recoveryKeys()
        let vault = keys.isEmpty || namesVault ? try openVault() : nil
        return UnlockCredentials(vault: vault, recipientKeys: keys)
    }
}

/// Reads a small secret from a file that only its owner may read (see ``SecretFile``).
public func readSecretFile(_ path: String, what: String) throws -> SecretBytes {
    try SecretFile.read(path, what: what, hint: "write the \(what) to it", singleLine: false)
}

/// Prints an Encodable as JSON (sorted keys, one object).
public func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
