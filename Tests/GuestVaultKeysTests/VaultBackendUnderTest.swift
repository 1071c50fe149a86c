import Foundation
import GuestVaultKeys
import Testing

/// The vault backends the shared suite runs on: the file vault, and the PKCS#11 vault on
/// a real SoftHSM2 token.
enum VaultBackendUnderTest: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case file
    case pkcs11

    var testDescription: String { rawValue }

    /// Every backend whose peer is here. CI installs SoftHSM2, so there it is both; a
    /// machine without it runs the file vault and says why the PKCS#11 one is skipped.
    static var available: [VaultBackendUnderTest] {
        if let reason = SoftHSM.missingReason {
            print("skipping the PKCS#11 vault in the shared suite: \(reason)")
            return [.file]
        }
        return allCases
    }

    struct Made {
        let vault: KeyVault
        let reopen: () throws -> KeyVault
        let dir: TemporaryDirectory
    }

    func make() throws -> Made {
        let dir = TemporaryDirectory()
        let path = dir.file("vault")
        switch self {
        case .file:
            let vault = try KeyVault.createFileVault(at: path)
            return Made(vault: vault, reopen: { try KeyVault.open(at: path) }, dir: dir)
        case .pkcs11:
            let token = try SoftHSM.token()
            let vault = try KeyVault.createPKCS11Vault(at: path, module: token.modulePath, token: token.label, pinFile: token.pinFile)
            return Made(vault: vault, reopen: { try KeyVault.open(at: path) }, dir: dir)
        }
    }
}
