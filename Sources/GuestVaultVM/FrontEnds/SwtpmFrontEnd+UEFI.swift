import FoundationEssentials
import Glibc
import GuestVaultCore
import GuestVaultSystem
import GuestVaultTPMContainer
import GuestVaultUEFI
import Logging

/// The VM's UEFI variables under libvirt (docs/LIBVIRT.md, "UEFI variables"): the domain's
/// `<nvram>` names `/run/guestvault/nvram/UUID_VARS.fd` (tmpfs). libvirt copies the
/// `<nvram template>` there before it starts swtpm; the `swtpm` front end, which knows
/// the VM's UUID from its container, writes the container's `uefi.vars` over that copy
/// (or, on the VM's first start, seals the copy in), seals every change while QEMU runs,
/// and at the end seals a last time and removes the plaintext, as `serve --uefi-vars`.
extension SwtpmFrontEnd {
    /// Where the plaintext VARS files live while their VMs run (a directory on tmpfs,
    /// root's, 0700 or 0711).
    static let defaultNVRAMDirectory = "/run/guestvault/nvram"
    /// Overrides ``defaultNVRAMDirectory`` (install-frontends.sh --nvram-dir writes it into
    /// the wrappers; libvirt clears the environment).
    static let nvramDirectoryVariable = "GUESTVAULT_NVRAM_DIR"
    /// The users libvirt runs QEMU as (Debian's, then Fedora's): libvirt creates the
    /// nvram file owned by that user, so it is an allowed owner besides this one.
    static let qemuUsers = ["libvirt-qemu", "qemu"]

    /// The VARS file of VM `vm` by the convention.
    static func nvramPath(vm: UUID) -> String {
        let directory = Environment.value(nvramDirectoryVariable) ?? defaultNVRAMDirectory
        return FileSystem.join(directory, "\(vm.uuidString.lowercased())_VARS.fd")
    }

    /// Starts the seal-back of the VM's UEFI variables if libvirt made its nvram file at
    /// the conventional path; nil when nothing is there (a VM without UEFI, or whose
    /// `<nvram>` is elsewhere). Anything at that path that is not a file we may take is
    /// refused (the VM does not start) and left alone.
    static func startUEFIVariables(storage: ContainerTPMStorage, vm: UUID, logger: Logger) throws -> TrustedLaunchService? {
        let path = nvramPath(vm: vm)
        guard FileSystem.exists(path) else {
            logger.debug("no UEFI variables at \(path); the domain's <nvram> is not GuestVault's")
            return nil
        }
        var owners: Set<UInt32> = []
        for name in qemuUsers {
            if let entry = getpwnam(name) { owners.insert(entry.pointee.pw_uid) }
        }
        let vars = try UEFIVarsFile(adopting: path, storage: storage, allowedOwners: owners) { bytes in
            _ = try VariableStore.parse(bytes)
        }
        switch vars.leftover {
        case .sealedTemplateCopy:
            logger.notice("first start with UEFI: sealed libvirt's copy of the <nvram template> at \(path) as the VM's variables")
        case .replacedTemplateCopy:
            logger.info("wrote the VM's sealed UEFI variables over libvirt's template copy at \(path)")
        case .none, .unchanged, .recovered:
            logger.info("the UEFI variables at \(path) already match the sealed ones")
        }
        let service = try TrustedLaunchService(configuration: .init(), storage: storage, uefiVars: vars, logger: logger)
        service.start()
        return service
    }
}
