import Dispatch
public import GuestVaultState
public import GuestVaultTPM
import GuestVaultCore

extension TPMManufacturer {
    /// Manufactures a TPM and commits it into `container` (unlocked, writable, without a
    /// TPM yet) as its `tpm.permanent`, in one commit. Needs the process's one TPM slot.
    public static func manufacture(into container: GuestStateContainer, options: Options) throws -> Report {
        guard !container.entryNames.contains(TPMStateBlob.permanent.entryName) else {
            throw TPMEngineError(.storage, "\(container.path) already holds a TPM")
        }
        let start = DispatchTime.now().uptimeNanoseconds
        let made = try manufacture(options: options)
        var report = made.report
        try container.write(TPMStateBlob.permanent.entryName, made.permanent)
        try container.commit()
        report.milliseconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
        return report
    }
}

extension TPMManufacturer {
    /// `swtpm_setup --reconfigure --pcr-banks`: allocates `banks` in the TPM of
    /// `container` (unlocked, writable) and commits its new `tpm.permanent` in one
    /// commit; every other entry (volatile state, NVRAM of the firmware, ...) stays as it
    /// was. Returns the banks active before; commits nothing when they are already
    /// `banks`. Needs the process's one TPM slot.
    @discardableResult
    public static func reallocatePCRBanks(in container: GuestStateContainer, banks: Set<PCRBank>) throws -> Set<PCRBank> {
        guard container.entryNames.contains(TPMStateBlob.permanent.entryName) else {
            throw TPMEngineError(.storage, "\(container.path) holds no TPM to reconfigure")
        }
        let permanent = try container.read(TPMStateBlob.permanent.entryName)
        let (changed, before) = try reallocatePCRBanks(permanent: permanent, banks: banks)
        if let changed {
            try container.write(TPMStateBlob.permanent.entryName, changed)
            try container.commit()
        }
        return before
    }
}
