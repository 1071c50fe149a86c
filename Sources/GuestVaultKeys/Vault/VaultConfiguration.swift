import FoundationEssentials
import GuestVaultSystem

/// `vault.json`: what kind of vault a directory holds and where its root key is. Not
/// secret; the root key itself is in `root.key` (file vault) or in the token.
struct VaultConfiguration: Codable, Equatable {
    struct PKCS11: Codable, Equatable {
        var module: String
        var token: String
        var keyLabel: String
        var pinFile: String
    }

    static let formatName = "guestvault-vault"
    static let currentVersion = 1

    var format: String = formatName
    var version: Int = currentVersion
    var backend: String
    /// Hex of the root key identifier (see ``RootKeyBackend/rootKeyID()``).
    var rootKeyID: String
    var created: String
    var passphraseProtected: Bool?
    var pkcs11: PKCS11?

    static func load(from path: String) throws -> VaultConfiguration {
        let bytes = try SecretFile.readPrivate(
            path, what: "vault.json", limit: 64 * 1024, sealed: true, tooLarge: .corrupt,
            missing: VaultError(.vaultNotFound, subject: FileSystem.parentDirectory(of: path),
                                reason: "no vault here (no vault.json); create one with `guestvault vault init --vault DIR`"))
        let configuration: VaultConfiguration
        do {
            configuration = try JSONDecoder().decode(VaultConfiguration.self, from: Data(bytes))
        } catch {
            throw VaultError(.corrupt, subject: path, reason: "not a valid vault.json", underlying: error)
        }
        guard configuration.format == formatName else {
            throw VaultError(.corrupt, subject: path, reason: "format is \"\(configuration.format)\", expected \"\(formatName)\"")
        }
        guard configuration.version == currentVersion else {
            throw VaultError(.corrupt, subject: path, reason: "vault version \(configuration.version) is not supported (expected \(currentVersion))")
        }
        return configuration
    }

    /// Writes vault.json, never over an existing one (`vault init` makes it once).
    func save(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do {
            try DurableFile.write(Array(try encoder.encode(self)) + [0x0a], to: path, mode: FileSystem.privateFileMode, .creatingNew)
        } catch {
            throw VaultError.file(path, "could not write vault.json", error)
        }
    }
}
