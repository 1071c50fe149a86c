import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultTPM

/// Issues EK certificates with the vault's host CA (made on first use; its certificate
/// is in the vault as ca.pem).
enum EKCertificates {
    static func issuer(vault: KeyVault, vm: UUID) throws -> (@Sendable (TPMPublicKey) throws -> [UInt8])? {
        let authority = try vault.hostCA()
        let vmID = vm.uuidString.lowercased()
        return { key in
            let publicKey: EndorsementPublicKey
            switch key {
            case .rsa(let modulus, let exponent): publicKey = .rsa(modulus: modulus, exponent: exponent)
            case .ecc(_, let x, let y): publicKey = .eccP256(x: x, y: y)
            }
            var request = EKCertificateRequest(publicKey: publicKey, vmID: vmID, serial: nil)
            request.tpmModel = "swtpm"
            return try authority.issueEKCertificate(request)
        }
    }
}
