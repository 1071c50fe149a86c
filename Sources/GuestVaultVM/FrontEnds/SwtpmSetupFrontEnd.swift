import FoundationEssentials
import Glibc
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultTPM
import GuestVaultTPMContainer
import Logging

/// `swtpm_setup`: makes a VM's TPM, as swtpm_setup 0.7 does, but as a sealed GuestVault
/// container in the state directory (docs/LIBVIRT.md).
enum SwtpmSetupFrontEnd {
    static let program = "swtpm_setup"

    static let capabilities = #"{ "type": "swtpm_setup", "features": [ "tpm-2.0", "cmdarg-pwdfile-fd", "tpm2-rsa-keysize-2048", "tpm2-rsa-keysize-3072", "cmdarg-create-config-files", "cmdarg-reconfigure-pcr-banks" ], "version": "0.7.1" }"#

    static let valued: Set<String> = [
        "tpm-state", "tpmstate", "tpm", "swtpm_ioctl", "config", "vmid", "logfile", "keyfile", "keyfile-fd", "pwdfile",
        "pwdfile-fd", "cipher", "rsa-keysize", "runas", "pcr-banks",
    ]
    static let flags: Set<String> = [
        "tpm2", "createek", "create-ek-cert", "create-platform-cert", "lock-nvram", "overwrite", "not-overwrite", "ecc",
        "print-capabilities", "reconfigure", "version", "help", "create-config-files",
    ]
    /// The PCR banks when `--pcr-banks` is not given (swtpm_setup 0.7.1's default).
    static let defaultBanks: Set<PCRBank> = [.sha256]

    static func run(_ arguments: [String]) throws -> Int32 {
        // --create-config-files takes an optional value (`=overwrite,root`, or libvirt's
        // separate `skip-if-exist`).
        let words = arguments.map { $0.hasPrefix("--create-config-files=") ? "--create-config-files" : $0 }
        let args = try FrontEndArguments(words, program: program, valued: valued, flags: flags)
        // GuestVault keeps no swtpm_setup/swtpm-localca configuration files: nothing to make.
        if args.has("create-config-files") { return 0 }
        if let extra = args.positionals.first { throw FrontEndError.usage(program, "unexpected argument \(extra)") }
        if args.has("help") { print(help); return 0 }
        if args.has("version") { print("TPM emulator setup tool version 0.7.1 (GuestVault \(GuestVaultVersion.string))"); return 0 }
        if args.has("print-capabilities") { print(capabilities); return 0 }
        guard args.has("tpm2") else {
            throw FrontEndError(.frontEndUnsupported, "\(program): only TPM 2.0 is supported; pass --tpm2 (TPM 1.2 state is not kept by GuestVault)")
        }
        guard let stateText = args.value("tpm-state") ?? args.value("tpmstate") else {
            throw FrontEndError.usage(program, "--tpm-state DIR (or --tpmstate dir://DIR | file://FILE) is required")
        }
        if let runas = args.value("runas") { try FrontEndEnvironment.runAs(runas, program: program) }
        let location = try FrontEndStateLocation(uri: stateText, program: program)
        let logger = try FrontEndEnvironment.logger(program: program, file: args.value("logfile"))
        let rsaEK = try rsaKind(args.value("rsa-keysize"))
        let banks = try pcrBanks(args.value("pcr-banks"), logger: logger)
        if args.has("overwrite") && args.has("not-overwrite") {
            throw FrontEndError.usage(program, "give --overwrite or --not-overwrite, not both")
        }
        if let cipher = args.value("cipher"), cipher != "aes-256-cbc", cipher != "aes-128-cbc" {
            throw FrontEndError.usage(program, "--cipher \(cipher) is not aes-128-cbc or aes-256-cbc")
        }
        let mode = SwtpmKey.Mode(swtpmName: args.value("cipher") ?? "aes-128-cbc") ?? .swtpmDefault
        var secret: SecretBytes?
        var swtpmKey: SwtpmKey?
        if let fd = args.value("pwdfile-fd") {
            secret = try FrontEndEnvironment.readSecret(fd: fd, option: "--pwdfile-fd", program: program)
        } else if let file = args.value("pwdfile") {
            secret = try FrontEndEnvironment.readSecret(file: file, program: program)
        }
        if let secret { swtpmKey = try SwtpmKey.fromPassphrase(secret, kdf: .pbkdf2, mode: mode, file: "libvirt secret") }
        if args.has("keyfile") || args.has("keyfile-fd") {
            throw FrontEndError(.frontEndUnsupported, "\(program): --keyfile/--keyfile-fd are not supported; libvirt passes its secret with --pwdfile-fd, and the vault seals the state")
        }

        let vault = try FrontEndEnvironment.openVault()
        if args.has("reconfigure") {
            return try reconfigure(location: location, banks: banks, vault: vault, logger: logger)
        }
        if location.hasContainer {
            if args.has("not-overwrite") {
                logger.info("not overwriting the existing sealed TPM state in \(location.container)")
                return 0
            }
            guard args.has("overwrite") else {
                throw FrontEndError(.alreadyExists, "\(program): \(location.container) already holds a TPM; pass --overwrite to replace it or --not-overwrite to keep it")
            }
        }
        let vm = try vmID(args.value("vmid"), location: location, vault: vault)
        if !location.hasContainer && location.hasSwtpmState && !args.has("overwrite") {
            // An operator switching a host over: swtpm's state becomes the container.
            let imported = try location.importSwtpmState(vm: vm, vault: vault, secret: secret, key: swtpmKey, logger: logger)
            try imported.flush()
            return 0
        }
        // swtpm_setup 0.7.1 makes an RSA EK (--rsa-keysize) and the ECC P-384 EK, with or
        // without --ecc (which only picks the type of a --create-spk key).
        let options = TPMManufacturer.Options(
            createEndorsementKeys: args.has("createek") || args.has("create-ek-cert") || args.has("create-platform-cert"),
            issueCertificate: args.has("create-ek-cert") ? try EKCertificates.issuer(vault: vault, vm: vm) : nil,
            endorsementKeys: [rsaEK, .eccP384],
            issuePlatformCertificate: args.has("create-platform-cert") ? try EKCertificates.platformIssuer(vault: vault, vm: vm) : nil,
            lockNVRAM: args.has("lock-nvram"),
            pcrBanks: banks)
        let container: GuestStateContainer
        if location.hasContainer {
            // --overwrite: a new TPM in the same container, so its generation goes on.
            container = try location.open(vault: vault)
            for name in container.entryNames where name.hasPrefix("tpm.") { try container.remove(name) }
            try container.commit()
        } else {
            container = try location.create(vm: vm, vault: vault, secret: secret)
        }
        let report = try TPMManufacturer.manufacture(into: container, options: options)
        try container.flush()
        if let directory = location.directory {
            // --overwrite also drops what swtpm left, so no plaintext stays behind.
            for name in FrontEndStateLocation.swtpmFiles where FileSystem.exists(FileSystem.join(directory, name)) {
                try FileSystem.removeFile(FileSystem.join(directory, name))
            }
        }
        let keys = (report.endorsementKeys ?? []).map(\.displayName).joined(separator: ", ")
        logger.notice("made a TPM 2.0 for VM \(vm.uuidString.lowercased()) in the sealed container \(location.container) with PCR banks \(PCRBank.list(Set(report.pcrBanks ?? [])))\(keys.isEmpty ? "" : " and EKs (\(keys))")\(report.rsaCertificateBytes != nil ? ", EK certificates" : "")\(report.platformCertificateBytes != nil ? ", a platform certificate (NV 0x01c08000)" : "")\(report.rsaCertificateBytes != nil || report.platformCertificateBytes != nil ? " from the vault's host CA\(options.lockNVRAM ? ", write-locked" : "")" : "")\(secret != nil ? "; libvirt's secret is an additional protector" : "")")
        return 0
    }

    /// `--vmid NAME:UUID` (libvirt) or `--vmid UUID`; else the container's own VM id, or a
    /// new one (Proxmox passes none).
    static func vmID(_ text: String?, location: FrontEndStateLocation, vault: KeyVault) throws -> UUID {
        if let text {
            let last = text.split(separator: ":").last.map(String.init) ?? text
            if let uuid = UUID(uuidString: last) { return uuid }
        }
        if location.hasContainer { return try GuestStateContainer.open(at: location.container).vm }
        return location.impliedVM ?? UUID()
    }

    /// `--rsa-keysize 2048|3072|max` (swtpm_setup's values; max is 3072 with libtpms 0.9).
    static func rsaKind(_ text: String?) throws -> EndorsementKeyKind {
        switch text {
        case nil, "2048": return .rsa2048
        case "3072", "max": return .rsa3072
        case let size?:
            throw FrontEndError(.frontEndUnsupported, "\(program): --rsa-keysize \(size) is not supported; give 2048, 3072 or max (swtpm_setup's values)")
        }
    }

    /// `--pcr-banks LIST`: nil for `-` (leave the banks as they are); sha256 (swtpm_setup's
    /// default) when not given. As swtpm_setup does, names the TPM has no bank for are
    /// skipped with a log line, and a list with none it has is refused.
    static func pcrBanks(_ value: String?, logger: Logger) throws -> Set<PCRBank>? {
        let names = (value ?? "").split(separator: ",").map { $0.trimmingWhitespace().lowercased() }.filter { !$0.isEmpty }
        if names.isEmpty { return defaultBanks }
        if names == ["-"] { return nil }
        var banks: Set<PCRBank> = []
        for name in names {
            if let bank = PCRBank(rawValue: name) { banks.insert(bank) } else { logger.notice("--pcr-banks: the TPM has no \(name) bank; skipped") }
        }
        guard !banks.isEmpty else {
            throw FrontEndError.usage(program, "--pcr-banks \(names.joined(separator: ",")): none of these banks can be allocated (sha1, sha256, sha384, sha512)")
        }
        return banks
    }

    /// `--reconfigure [--pcr-banks LIST]` on an existing TPM: TPM2_PCR_Allocate in the container's TPM, committed in one commit; the keys,
    /// certificates and NV stay. The banks are active from the TPM's next start.
    static func reconfigure(location: FrontEndStateLocation, banks: Set<PCRBank>?, vault: KeyVault, logger: Logger) throws -> Int32 {
        guard location.hasContainer else {
            throw FrontEndError(.frontEndState, "\(program): --reconfigure: \(location.container) holds no TPM to reconfigure")
        }
        let container = try location.open(vault: vault)
        guard let banks else {
            logger.info("--reconfigure --pcr-banks -: the TPM in \(location.container) stays as it is")
            return 0
        }
        let before = try TPMManufacturer.reallocatePCRBanks(in: container, banks: banks)
        try container.flush()
        if before == banks {
            logger.info("the TPM in \(location.container) already has the PCR banks \(PCRBank.list(banks)) active")
        } else {
            logger.notice("allocated the PCR banks \(PCRBank.list(banks)) (before: \(PCRBank.list(before))) in the TPM in \(location.container); active from its next start")
        }
        return 0
    }

    static let help = """
        Usage: swtpm_setup --tpm2 --tpm-state DIR|dir://DIR|file://FILE [options]
        GuestVault's swtpm_setup: makes a VM's TPM 2.0 as a sealed container (docs/LIBVIRT.md).
          --createek                  EKs as swtpm_setup 0.7.1 makes them: RSA (0x81010001, or 0x8101001c
                                      with --rsa-keysize 3072) and ECC NIST P-384 (0x81010016)
          --rsa-keysize 2048|3072|max the RSA EK's size (default 2048)
          --create-ek-cert            EK certificates from the vault's host CA in NV 0x01c00002 (or
                                      0x01c0001c) and 0x01c00016
          --create-platform-cert      a platform certificate from the host CA in NV 0x01c08000
          --lock-nvram                write-lock the certificate indices
          --ecc                       accepted (swtpm_setup: the type of a --create-spk key)
          --pcr-banks LIST            PCR banks to allocate: sha1,sha256,sha384,sha512 (default sha256)
          --reconfigure               with --pcr-banks: allocate them in an existing TPM; keys, NV stay
          --vmid NAME:UUID --logfile FILE --overwrite | --not-overwrite
          --pwdfile-fd N | --pwdfile FILE [--cipher aes-256-cbc]   libvirt's secret: an additional protector
          --runas USER --config FILE --print-capabilities
          --create-config-files [overwrite|skip-if-exist]
        The vault: $GUESTVAULT_VAULT, or \(FrontEndEnvironment.defaultVault).
        """
}
