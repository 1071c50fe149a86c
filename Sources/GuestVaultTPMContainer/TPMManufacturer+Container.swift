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
