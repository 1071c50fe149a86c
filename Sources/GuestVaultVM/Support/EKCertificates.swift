public import FoundationEssentials
import Glibc
import GuestVaultCore
public import GuestVaultCrypto
public import GuestVaultKeys
public import GuestVaultTPM

/// Issues EK and platform certificates with the vault's host CA (made on first use; its
/// certificate is in the vault as ca.pem).
public enum EKCertificates {
    public static func issuer(vault: KeyVault, vm: UUID) throws -> (@Sendable (TPMPublicKey) throws -> [UInt8])? {
        let authority = try vault.hostCA()
        let vmID = vm.uuidString.lowercased()
        return { key in
            var request = EKCertificateRequest(publicKey: try endorsementKey(key), vmID: vmID, serial: nil)
            request.tpmModel = "swtpm"
            return try authority.issueEKCertificate(request)
        }
    }

    /// The platform certificate swtpm_setup `--create-platform-cert` stores (see
    /// ``PlatformCertificateRequest``): for the RSA EK, the VM's id as the subject.
    public static func platformIssuer(vault: KeyVault, vm: UUID) throws -> (@Sendable (TPMPublicKey) throws -> [UInt8])? {
        let authority = try vault.hostCA()
        let vmID = vm.uuidString.lowercased()
        return { key in
            var request = PlatformCertificateRequest(publicKey: try endorsementKey(key), vmID: vmID)
            request.platformVersion = GuestVaultVersion.string
            return try authority.issuePlatformCertificate(request)
        }
    }

    public static func endorsementKey(_ key: TPMPublicKey) throws -> EndorsementPublicKey {
        switch key {
        case .rsa(let modulus, let exponent): return .rsa(modulus: modulus, exponent: exponent)
        case .ecc(TPMConstant.eccNistP256, let x, let y): return .eccP256(x: x, y: y)
        case .ecc(TPMConstant.eccNistP384, let x, let y): return .eccP384(x: x, y: y)
        case .ecc(let curve, _, _):
            throw TPMEngineError(.malformed, "an endorsement key on ECC curve 0x\(String(curve, radix: 16)) has no certificate profile here (P-256 and P-384 have)")
        }
    }
}
