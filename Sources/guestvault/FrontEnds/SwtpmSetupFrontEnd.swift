import Foundation
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

    static let capabilities = #"{ "type": "swtpm_setup", "features": [ "tpm-2.0", "cmdarg-pwdfile-fd", "tpm2-rsa-keysize-2048", "cmdarg-create-config-files", "cmdarg-reconfigure-pcr-banks" ], "version": "0.7.1" }"#

    static let valued: Set<String> = [
        "tpm-state", "tpmstate", "tpm", "swtpm_ioctl", "config", "vmid", "logfile", "keyfile", "keyfile-fd", "pwdfile",
        "pwdfile-fd", "cipher", "rsa-keysize", "runas", "pcr-banks",
    ]
    static let flags: Set<String> = [
        "tpm2", "createek", "create-ek-cert", "create-platform-cert", "lock-nvram", "overwrite", "not-overwrite", "ecc",
        "print-capabilities", "reconfigure", "version", "help", "create-config-files",
    ]
    /// The PCR banks swtpm_setup knows.
    static let knownBanks: Set<String> = ["sha1", "sha256", "sha384", "sha512"]

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
        if let size = args.value("rsa-keysize"), size != "2048" {
            throw FrontEndError(.frontEndUnsupported, "\(program): --rsa-keysize \(size) is not supported; GuestVault makes RSA 2048 EKs")
        }
        let banks = try args.value("pcr-banks").map { try parseBanks($0) }
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
        if let banks, banks != ["sha256"] {
            throw FrontEndError(.frontEndUnsupported, "\(program): --pcr-banks \(banks.sorted().joined(separator: ",")) is not supported yet; GuestVault's TPMs have the sha256 bank")
        }
        if args.has("create-platform-cert") {
            logger.notice("--create-platform-cert: GuestVault does not issue a platform certificate yet; the EK certificates are made")
        }
        let options = TPMManufacturer.Options(
            createEndorsementKeys: args.has("createek") || args.has("create-ek-cert"),
            issueCertificate: args.has("create-ek-cert") ? try EKCertificates.issuer(vault: vault, vm: vm) : nil)
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
        logger.notice("made a TPM 2.0 for VM \(vm.uuidString.lowercased()) in the sealed container \(location.container)\(report.rsaEKPersistentHandle != nil ? " with EKs (RSA 2048, ECC P-256)" : "")\(report.rsaCertificateBytes != nil ? " and EK certificates from the vault's host CA" : "")\(secret != nil ? "; libvirt's secret is an additional protector" : "")")
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

    static func parseBanks(_ text: String) throws -> Set<String> {
        let banks = Set(text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() })
        let unknown = banks.subtracting(knownBanks)
        guard unknown.isEmpty, !banks.isEmpty else {
            throw FrontEndError.usage(program, "--pcr-banks \(text): unknown bank \(unknown.sorted().joined(separator: ", ")) (sha1, sha256, sha384, sha512)")
        }
        return banks
    }

    /// `--reconfigure --pcr-banks LIST` on an existing TPM.
    static func reconfigure(location: FrontEndStateLocation, banks: Set<String>?, vault: KeyVault, logger: Logger) throws -> Int32 {
        guard location.hasContainer else {
            throw FrontEndError(.frontEndState, "\(program): --reconfigure: \(location.container) holds no TPM to reconfigure")
        }
        guard let banks else { throw FrontEndError.usage(program, "--reconfigure needs --pcr-banks") }
        _ = try location.open(vault: vault)
        guard banks == ["sha256"] else {
            throw FrontEndError(.frontEndUnsupported, "\(program): --pcr-banks \(banks.sorted().joined(separator: ",")) is not supported yet; GuestVault's TPMs have the sha256 bank")
        }
        logger.info("the TPM in \(location.container) already has the sha256 PCR bank active")
        return 0
    }

    static let help = """
        Usage: swtpm_setup --tpm2 --tpm-state DIR|dir://DIR|file://FILE [options]
        GuestVault's swtpm_setup: makes a VM's TPM 2.0 as a sealed container (docs/LIBVIRT.md).
          --createek --create-ek-cert --create-platform-cert --lock-nvram --ecc
          --vmid NAME:UUID --logfile FILE --overwrite | --not-overwrite
          --pwdfile-fd N | --pwdfile FILE [--cipher aes-256-cbc]   libvirt's secret: an additional protector
          --pcr-banks LIST --reconfigure --runas USER --config FILE --print-capabilities
          --create-config-files [overwrite|skip-if-exist]
        The vault: $GUESTVAULT_VAULT, or \(FrontEndEnvironment.defaultVault).
        """
}
