import ArgumentParser
import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultSystem

/// `--vault DIR` (or GUESTVAULT_VAULT) and `--passphrase-file F` (or
/// GUESTVAULT_PASSPHRASE_FILE), shared by every verb that uses a vault.
struct VaultOptions: ParsableArguments {
    @Option(name: .customLong("vault"), help: ArgumentHelp(
        "The key vault directory (default: $GUESTVAULT_VAULT).", valueName: "dir"))
    var vaultPath: String?

    @Option(name: .customLong("passphrase-file"), help: ArgumentHelp(
        "A file holding the vault's passphrase, if it has one (default: $GUESTVAULT_PASSPHRASE_FILE). Mode must be 0600 or stricter.",
        valueName: "file"))
    var passphraseFile: String?

    /// The vault directory, from the option or the environment.
    func resolvedPath() throws -> String {
        if let vaultPath { return vaultPath }
        if let fromEnvironment = ProcessInfo.processInfo.environment["GUESTVAULT_VAULT"], !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        throw ValidationError("no vault given: pass --vault DIR or set GUESTVAULT_VAULT")
    }

    /// The passphrase, if a passphrase file was given.
    func passphrase() throws -> SecretBytes? {
        let file = passphraseFile ?? ProcessInfo.processInfo.environment["GUESTVAULT_PASSPHRASE_FILE"]
        guard let file, !file.isEmpty else { return nil }
        return try readSecretFile(file, what: "passphrase")
    }

    /// Opens the vault.
    func open() throws -> KeyVault {
        try KeyVault.open(at: resolvedPath(), passphrase: passphrase())
    }
}

/// Reads a small secret from a file that only its owner may read (see ``SecretFile``).
func readSecretFile(_ path: String, what: String) throws -> SecretBytes {
    try SecretFile.read(path, what: what, hint: "write the \(what) to it", singleLine: false)
}

/// Prints an Encodable as JSON (sorted keys, one object).
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
