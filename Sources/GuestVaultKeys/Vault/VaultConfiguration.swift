import Foundation
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
        let bytes: [UInt8]
        do {
            bytes = try FileSystem.readFile(path, limit: 64 * 1024)
        } catch let error as SystemError where error.isNotFound {
            throw VaultError(.notFound, subject: FileSystem.parentDirectory(of: path),
                             reason: "no vault here (no vault.json); create one with `guestvault vault init --vault DIR`")
        } catch {
            throw VaultError(.io, subject: path, reason: "could not read: \(error)")
        }
        let configuration: VaultConfiguration
        do {
            configuration = try JSONDecoder().decode(VaultConfiguration.self, from: Data(bytes))
        } catch {
            throw VaultError(.corrupt, subject: path, reason: "not a valid vault.json: \(error)")
        }
        guard configuration.format == formatName else {
            throw VaultError(.corrupt, subject: path, reason: "format is \"\(configuration.format)\", expected \"\(formatName)\"")
        }
        guard configuration.version == currentVersion else {
            throw VaultError(.corrupt, subject: path, reason: "vault version \(configuration.version) is not supported (expected \(currentVersion))")
        }
        return configuration
    }

    func save(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do {
            try FileSystem.writeAtomically(Array(try encoder.encode(self)) + [0x0a], to: path)
        } catch {
            throw VaultError(.io, subject: path, reason: "could not write: \(error)")
        }
    }
}
