import GuestVaultCore

/// The endorsement key templates of the TCG EK Credential Profile for TPM 2.0
/// (the default "low range" templates L-1, RSA 2048, and L-2, ECC NIST P-256), and the
/// handles and NV indices they live at.
public enum EKTemplates {
    public static let rsaPersistentHandle: UInt32 = 0x8101_0001
    public static let eccPersistentHandle: UInt32 = 0x8101_0002
    public static let rsaCertificateIndex: UInt32 = 0x01C0_0002
    public static let eccCertificateIndex: UInt32 = 0x01C0_000A

    /// fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt.
    static let attributes: UInt32 = 0x0003_00B2
    /// PolicySecret(TPM_RH_ENDORSEMENT), the default EK policy.
    static let policy: [UInt8] = [
        0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
        0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
    ]

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
