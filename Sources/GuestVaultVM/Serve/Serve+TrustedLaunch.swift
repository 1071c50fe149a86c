import GuestVaultKeys
import GuestVaultState
import GuestVaultTPM
import GuestVaultTPMContainer
import GuestVaultUEFI
import Logging

// Trusted launch beside the vTPM (docs/TRUSTED-LAUNCH.md): the UEFI variables as a pflash
// file, the host channel and the boot-policy check, as `serve` runs them.

/// Debian's OVMF templates (package `ovmf`).
public enum OVMFTemplates {
    public static let secureBoot = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
    public static let plain = "/usr/share/OVMF/OVMF_VARS_4M.fd"
}

extension ServeSettings {
    /// The trusted-launch service beside the TPM, if any of its options is given.
    func makeTrustedLaunch(storage: ContainerTPMStorage, logger: Logger) throws -> TrustedLaunchService? {
        guard uefiVars != nil || hostSocket != nil || checkPolicy else { return nil }
        if checkPolicy && storage.info.entries.contains(where: { $0.name == BootPolicy.entryName }) == false {
            logger.warning("--check-policy: the container holds no boot policy yet; record one with `guestvault policy record`")
        }
        let vars = try uefiVars.map { try UEFIVarsFile(path: $0, storage: storage) }
        if let vars, vars.leftover == .recovered {
            logger.warning("\(vars.path) was left by a run that was killed and differed from the container; sealed it in and kept it")
        }
        let service = try TrustedLaunchService(
            configuration: .init(hostSocket: hostSocket, pollInterval: uefiPoll, checkPolicy: checkPolicy, policySettle: policySettle),
            storage: storage, uefiVars: vars, logger: logger)
        service.start()
        return service
    }
}

