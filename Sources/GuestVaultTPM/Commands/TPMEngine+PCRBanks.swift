import GuestVaultCore

/// A PCR bank swtpm_setup's `--pcr-banks` names.
public enum PCRBank: String, Sendable, Codable, CaseIterable, Comparable {
    case sha1, sha256, sha384, sha512

    /// The bank's hash algorithm (TPM_ALG_ID).
    public var algorithm: UInt16 {
        switch self {
        case .sha1: TPMConstant.algSHA1
        case .sha256: TPMConstant.algSHA256
        case .sha384: TPMConstant.algSHA384
        case .sha512: TPMConstant.algSHA512
        }
    }

    public init?(algorithm: UInt16) {
        guard let bank = PCRBank.allCases.first(where: { $0.algorithm == algorithm }) else { return nil }
        self = bank
    }

    public static func < (a: PCRBank, b: PCRBank) -> Bool { a.algorithm < b.algorithm }

    /// "sha1,sha384": the banks in swtpm's order, comma-separated.
    public static func list(_ banks: Set<PCRBank>) -> String {
        banks.sorted().map(\.rawValue).joined(separator: ",")
    }
}

extension TPMEngine {
    /// TPM2_PCR_Allocate (platform auth), as swtpm_setup sends it: all 24 PCRs of each
    /// bank in `banks`, none of the others. It takes effect at the next TPM reset
    /// (_TPM_Init and Startup); the TPM must be started.
    public func allocatePCRBanks(_ banks: Set<PCRBank>) throws {
        guard !banks.isEmpty else { throw TPMEngineError(.malformed, "TPM2_PCR_Allocate needs at least one PCR bank") }
        var w = ByteWriter()
        w.u32(UInt32(PCRBank.allCases.count))
        for bank in PCRBank.allCases {
            w.u16(bank.algorithm)
            w.u8(3)
            w.raw(banks.contains(bank) ? [0xff, 0xff, 0xff] : [0, 0, 0])
        }
        var r = try run(TPMCommand(code: TPMConstant.ccPCRAllocate, handles: [TPMConstant.rhPlatform], authorizations: 1, parameters: w.bytes),
                        "TPM2_PCR_Allocate").parameters()
        guard try r.u8("allocationSuccess") == 1 else {
            throw TPMEngineError(.tpmError, "TPM2_PCR_Allocate of \(PCRBank.list(banks)) did not succeed")
        }
    }

    /// The PCR banks that have at least one PCR allocated now (TPM2_GetCapability of
    /// TPM_CAP_PCRS). An allocation made since the last reset is not shown until then.
    public func activePCRBanks() throws -> Set<PCRBank> {
        var w = ByteWriter()
        w.u32(TPMConstant.capPCRs)
        w.u32(0)   // property
        w.u32(8)   // propertyCount
        var r = try run(TPMCommand(code: TPMConstant.ccGetCapability, parameters: w.bytes), "TPM2_GetCapability(PCRS)").parameters()
        _ = try r.u8("moreData")
        let capability = try r.u32("capability")
        guard capability == TPMConstant.capPCRs else {
            throw TPMEngineError(.malformed, "TPM2_GetCapability answered capability 0x\(String(capability, radix: 16)), not TPM_CAP_PCRS")
        }
        let count = try r.u32("pcrSelection count")
        guard count <= 16 else { throw TPMEngineError(.malformed, "TPM2_GetCapability(PCRS) reported \(count) banks; at most 16 expected") }
        var active: Set<PCRBank> = []
        for _ in 0..<count {
            let algorithm = try r.u16("hash")
            let size = try r.u8("sizeofSelect")
            let select = try r.array(Int(size), "pcrSelect")
            if select.contains(where: { $0 != 0 }), let bank = PCRBank(algorithm: algorithm) { active.insert(bank) }
        }
        return active
    }
}
