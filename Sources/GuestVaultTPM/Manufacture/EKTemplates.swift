import GuestVaultCore

/// The endorsement key templates of the TCG EK Credential Profile for TPM 2.0 (the
/// default "low range" templates L-1, RSA 2048, and L-2, ECC NIST P-256, and the "high
/// range" RSA 3072 and ECC NIST P-384 templates swtpm_setup 0.7.1 makes), and the handles
/// and NV indices they live at.
public enum EKTemplates {
    public static let rsaPersistentHandle: UInt32 = 0x8101_0001
    public static let eccPersistentHandle: UInt32 = 0x8101_0002
    public static let rsaCertificateIndex: UInt32 = 0x01C0_0002
    public static let eccCertificateIndex: UInt32 = 0x01C0_000A
    /// swtpm_setup's RSA 3072 EK (TPM2_EK_RSA3072_HANDLE) and its certificate
    /// (TPM2_NV_INDEX_RSA3072_HI_EKCERT).
    public static let rsa3072PersistentHandle: UInt32 = 0x8101_001C
    public static let rsa3072CertificateIndex: UInt32 = 0x01C0_001C
    /// swtpm_setup's ECC NIST P-384 EK (TPM2_EK_ECC_SECP384R1_HANDLE) and its certificate
    /// (TPM2_NV_INDEX_ECC_SECP384R1_HI_EKCERT).
    public static let eccP384PersistentHandle: UInt32 = 0x8101_0016
    public static let eccP384CertificateIndex: UInt32 = 0x01C0_0016
    /// The platform certificate (TPM2_NV_INDEX_PLATFORMCERT), as swtpm_setup
    /// `--create-platform-cert` stores it.
    public static let platformCertificateIndex: UInt32 = 0x01C0_8000

    /// fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt.
    static let attributes: UInt32 = 0x0003_00B2
    /// PolicySecret(TPM_RH_ENDORSEMENT), the default EK policy.
    static let policy: [UInt8] = [
        0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
        0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
    ]

    /// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | adminWithPolicy |
    /// restricted | decrypt: the high-range templates (swtpm_setup's 0x000300f2).
    static let highRangeAttributes: UInt32 = 0x0003_00F2
    /// PolicySecret(TPM_RH_ENDORSEMENT) computed with SHA-384, the high-range EK policy.
    static let highRangePolicy: [UInt8] = [
        0xB2, 0x6E, 0x7D, 0x28, 0xD1, 0x1A, 0x50, 0xBC, 0x53, 0xD8, 0x82, 0xBC, 0xF5, 0xFD, 0x3A, 0x1A,
        0x07, 0x41, 0x48, 0xBB, 0x35, 0xD3, 0xB4, 0xE4, 0xCB, 0x1C, 0x0A, 0xD9, 0xBD, 0xE4, 0x19, 0xCA,
        0xCB, 0x47, 0xBA, 0x09, 0x69, 0x96, 0x46, 0x15, 0x0F, 0x9F, 0xC0, 0x00, 0xF3, 0xF8, 0x0E, 0x12,
    ]

    /// TPMT_PUBLIC of the RSA 3072 EK as swtpm_setup 0.7.1 makes it: nameAlg SHA-384,
    /// the high-range attributes and policy, AES-256-CFB, an empty unique field.
    public static var rsa3072: [UInt8] {
        var w = ByteWriter()
        w.u16(TPMConstant.algRSA)
        w.u16(TPMConstant.algSHA384)
        w.u32(highRangeAttributes)
        w.sized(highRangePolicy)
        w.u16(TPMConstant.algAES); w.u16(256); w.u16(TPMConstant.algCFB)   // symmetric
        w.u16(TPMConstant.algNull)                                          // scheme
        w.u16(3072)                                                         // keyBits
        w.u32(0)                                                            // exponent (default)
        w.sized([])                                                         // unique: empty
        return w.bytes
    }

    /// TPMT_PUBLIC of the ECC NIST P-384 EK as swtpm_setup 0.7.1 makes it: nameAlg
    /// SHA-384, the high-range attributes and policy, AES-256-CFB, empty unique x and y.
    public static var eccP384: [UInt8] {
        var w = ByteWriter()
        w.u16(TPMConstant.algECC)
        w.u16(TPMConstant.algSHA384)
        w.u32(highRangeAttributes)
        w.sized(highRangePolicy)
        w.u16(TPMConstant.algAES); w.u16(256); w.u16(TPMConstant.algCFB)   // symmetric
        w.u16(TPMConstant.algNull)                                          // scheme
        w.u16(TPMConstant.eccNistP384)                                      // curveID
        w.u16(TPMConstant.algNull)                                          // kdf
        w.sized([])                                                         // unique.x: empty
        w.sized([])                                                         // unique.y: empty
        return w.bytes
    }

    /// TPMT_PUBLIC of the RSA 2048 EK (template L-1).
    public static var rsa2048: [UInt8] {
        var w = ByteWriter()
        w.u16(TPMConstant.algRSA)
        w.u16(TPMConstant.algSHA256)
        w.u32(attributes)
        w.sized(policy)
        w.u16(TPMConstant.algAES); w.u16(128); w.u16(TPMConstant.algCFB)   // symmetric
        w.u16(TPMConstant.algNull)                                          // scheme
        w.u16(2048)                                                         // keyBits
        w.u32(0)                                                            // exponent (default)
        w.sized([UInt8](repeating: 0, count: 256))                          // unique
        return w.bytes
    }

    /// TPMT_PUBLIC of the ECC NIST P-256 EK (template L-2).
    public static var eccP256: [UInt8] {
        var w = ByteWriter()
        w.u16(TPMConstant.algECC)
        w.u16(TPMConstant.algSHA256)
        w.u32(attributes)
        w.sized(policy)
        w.u16(TPMConstant.algAES); w.u16(128); w.u16(TPMConstant.algCFB)   // symmetric
        w.u16(TPMConstant.algNull)                                          // scheme
        w.u16(TPMConstant.eccNistP256)                                      // curveID
        w.u16(TPMConstant.algNull)                                          // kdf
        w.sized([UInt8](repeating: 0, count: 32))                           // unique.x
        w.sized([UInt8](repeating: 0, count: 32))                           // unique.y
        return w.bytes
    }

    /// NV attributes of the EK certificate indices, as swtpm_setup makes them:
    /// PPWRITE | WRITEDEFINE | PPREAD | OWNERREAD | AUTHREAD | NO_DA | PLATFORMCREATE.
    public static let certificateAttributes: UInt32 = 0x0000_0001 | 0x0000_2000 | 0x0001_0000 | 0x0002_0000 | 0x0004_0000 | 0x0200_0000 | 0x4000_0000
}

/// An endorsement key GuestVault can make: its template, persistent handle and the NV
/// index of its certificate.
public enum EndorsementKeyKind: String, Sendable, Codable, CaseIterable {
    /// TCG template L-1 at 0x81010001, certificate in 0x01C00002 (swtpm_setup's default).
    case rsa2048
    /// swtpm_setup's `--rsa-keysize 3072` EK at 0x8101001C, certificate in 0x01C0001C.
    case rsa3072
    /// TCG template L-2 at 0x81010002, certificate in 0x01C0000A.
    case eccP256
    /// swtpm_setup's ECC EK (NIST P-384) at 0x81010016, certificate in 0x01C00016.
    case eccP384

    public var template: [UInt8] {
        switch self {
        case .rsa2048: EKTemplates.rsa2048
        case .rsa3072: EKTemplates.rsa3072
        case .eccP256: EKTemplates.eccP256
        case .eccP384: EKTemplates.eccP384
        }
    }

    public var persistentHandle: UInt32 {
        switch self {
        case .rsa2048: EKTemplates.rsaPersistentHandle
        case .rsa3072: EKTemplates.rsa3072PersistentHandle
        case .eccP256: EKTemplates.eccPersistentHandle
        case .eccP384: EKTemplates.eccP384PersistentHandle
        }
    }

    public var certificateIndex: UInt32 {
        switch self {
        case .rsa2048: EKTemplates.rsaCertificateIndex
        case .rsa3072: EKTemplates.rsa3072CertificateIndex
        case .eccP256: EKTemplates.eccCertificateIndex
        case .eccP384: EKTemplates.eccP384CertificateIndex
        }
    }

    public var isRSA: Bool { self == .rsa2048 || self == .rsa3072 }

    /// "RSA 2048", "ECC P-384", ... for logs.
    public var displayName: String {
        switch self {
        case .rsa2048: "RSA 2048"
        case .rsa3072: "RSA 3072"
        case .eccP256: "ECC P-256"
        case .eccP384: "ECC P-384"
        }
    }
}

/// The public part of a TPM key, read from its TPMT_PUBLIC.
public enum TPMPublicKey: Sendable, Equatable {
    case rsa(modulus: [UInt8], exponent: UInt32)
    case ecc(curve: UInt16, x: [UInt8], y: [UInt8])

    public init(publicArea: [UInt8]) throws {
        var r = ByteReader(publicArea, subject: "TPMT_PUBLIC")
        let type = try r.u16("type")
        _ = try r.u16("nameAlg")
        _ = try r.u32("objectAttributes")
        _ = try r.sized("authPolicy")
        let symmetric = try r.u16("symmetric algorithm")
        if symmetric != TPMConstant.algNull { _ = try r.u16("symmetric keyBits"); _ = try r.u16("symmetric mode") }
        let scheme = try r.u16("scheme")
        if scheme != TPMConstant.algNull { _ = try r.u16("scheme hash") }
        switch type {
        case TPMConstant.algRSA:
            _ = try r.u16("keyBits")
            let exponent = try r.u32("exponent")
            self = .rsa(modulus: try r.sized("modulus"), exponent: exponent == 0 ? 65537 : exponent)
        case TPMConstant.algECC:
            let curve = try r.u16("curveID")
            let kdf = try r.u16("kdf")
            if kdf != TPMConstant.algNull { _ = try r.u16("kdf hash") }
            self = .ecc(curve: curve, x: try r.sized("x"), y: try r.sized("y"))
        default:
            throw TPMEngineError(.malformed, "public area of type 0x\(String(type, radix: 16)) is neither RSA nor ECC")
        }
    }
}
