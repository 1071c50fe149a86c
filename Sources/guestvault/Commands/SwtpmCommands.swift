import ArgumentParser
import Foundation
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultTPM
import GuestVaultTPMContainer
import GuestVaultVM

/// `--key` and `--pwdfile`, as swtpm and swtpm_setup take them.
struct SwtpmKeyOptions: ParsableArguments {
    @Option(name: .customLong("key"), help: ArgumentHelp(
        "swtpm's state key file: FILE[,format=hex|binary][,mode=aes-128-cbc|aes-256-cbc][,remove=true]. Defaults as in swtpm: format=hex, mode=aes-128-cbc.",
        valueName: "file[,...]"))
    var key: String?

    @Option(name: .customLong("pwdfile"), help: ArgumentHelp(
        "swtpm's passphrase file (the whole file is the passphrase, newline included): FILE[,kdf=pbkdf2|sha512][,mode=aes-128-cbc|aes-256-cbc]. Defaults: kdf=pbkdf2, mode=aes-128-cbc.",
        valueName: "file[,...]"))
    var pwdfile: String?

    func validate() throws {
        if key != nil && pwdfile != nil { throw ValidationError("give --key or --pwdfile, not both") }
    }

    /// The parsed option, nil for plain state.
    func option() throws -> SwtpmKey.Option? {
        if let key { return try SwtpmKey.Option(keyOption: key) }
        if let pwdfile { return try SwtpmKey.Option(pwdfileOption: pwdfile) }
        return nil
    }
}

struct ImportSwtpm: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import-swtpm",
        abstract: "Seal an swtpm TPM 2.0 state directory into a new container.",
        discussion: """
            Reads tpm2-00.permall and, if present, tpm2-00.volatilestate and
            tpm2-00.savestate from SWTPMDIR, checks swtpm's envelope (every length, the
            HMAC of encrypted files), decrypts them with the key swtpm used, checks with
            libtpms that a TPM starts from them, and seals them into a new container as
            tpm.permanent, tpm.volatile and tpm.savestate. If anything fails, no container
            is left behind. Stop swtpm (shut the VM down) first: a running swtpm's
            directory is refused.

            The key options read like swtpm's own --key: a state made with
            `swtpm_setup --keyfile F --cipher aes-256-cbc` imports with
            `--key F,mode=aes-256-cbc`, one made with `--pwdfile F` with `--pwdfile F`.

            Examples:
              guestvault import-swtpm --vault DIR --vm UUID \\
                  /var/lib/libvirt/swtpm/UUID/tpm2 vm1.state
              guestvault import-swtpm --vault DIR --vm UUID \\
                  --key /etc/vtpm/key.hex,mode=aes-256-cbc /srv/vtpm/vm1 vm1.state
              guestvault import-swtpm --vault DIR --vm UUID \\
                  --pwdfile /etc/vtpm/pass /srv/vtpm/vm1 vm1.state --json
            """)

    @OptionGroup var vault: VaultOptions

    @Option(help: ArgumentHelp("The VM's UUID; the container is bound to it.", valueName: "uuid"))
    var vm: String

    @OptionGroup var keys: SwtpmKeyOptions

    @Argument(help: ArgumentHelp("swtpm's state directory (swtpm --tpmstate dir=...).", valueName: "swtpmdir"))
    var swtpmDirectory: String

    @Argument(help: ArgumentHelp("The container file to create.", valueName: "state"))
    var state: String

    @Flag(help: "Print the import report as JSON.")
    var json = false

    func run() throws {
        guard let vmID = UUID(uuidString: vm) else { throw ValidationError("--vm \(vm) is not a UUID") }
        let keyOption = try keys.option()
        let key = try keyOption?.load()
        let keyVault = try vault.open()
        var created = false
        let report: SwtpmImportReport
        do {
            let container = try GuestStateContainer.create(at: state, vm: vmID, vault: keyVault)
            created = true
            report = try SwtpmInterop.importState(from: swtpmDirectory, key: key, into: container) { permanent, volatile, savestate in
                try TPMStateCheck.validate(permanent: permanent, volatile: volatile, savestate: savestate)
            }
            try container.flush()
        } catch {
            // The container (closed when the do block ended) is removed with its lock file.
            if created {
                try? FileSystem.removeFile(state)
                try? FileSystem.removeFile(state + ".lock")
                try? FileSystem.syncDirectory(FileSystem.parentDirectory(of: state))
            }
            throw error
        }
        try keyOption?.removeFileIfAsked()
        if json { try printJSON(report); return }
        print("Imported \(swtpmDirectory) into \(state) for VM \(report.vm), generation \(report.generation)\(report.key.map { " (decrypted: \($0))" } ?? "")")
        for file in report.files {
            print("  \(file.file.padding(toLength: 22, withPad: " ", startingAt: 0)) -> \(file.entry.padding(toLength: 14, withPad: " ", startingAt: 0)) \(formatBytes(UInt64(file.stateBytes)))")
        }
    }
}

struct ExportSwtpm: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-swtpm",
        abstract: "Write a container's TPM state as an swtpm state directory that swtpm 0.7 starts from.",
        discussion: """
            Writes tpm.permanent (and tpm.volatile, tpm.savestate if the container has
            them) as tpm2-00.permall, tpm2-00.volatilestate and tpm2-00.savestate in
            SWTPMDIR: plain, or encrypted with --key/--pwdfile exactly as swtpm encrypts
            them (start swtpm with the same key). The directory is created with mode 0700
            and each file is written with mode 0600, atomically. An existing directory must
            be empty unless --force, which replaces the state files in it (and removes a
            volatile or save state the container does not have). Run it as the user swtpm
            runs as, or change the owner afterwards.

            Examples:
              guestvault export-swtpm --vault DIR vm1.state /srv/vtpm/vm1
              swtpm socket --tpm2 --tpmstate dir=/srv/vtpm/vm1 \\
                  --ctrl type=unixio,path=/run/vm1-swtpm.sock
              guestvault export-swtpm --vault DIR vm1.state \\
                  --key /etc/vtpm/key.hex,mode=aes-256-cbc /srv/vtpm/vm1
              swtpm socket --tpm2 --tpmstate dir=/srv/vtpm/vm1 \\
                  --key file=/etc/vtpm/key.hex,mode=aes-256-cbc ...
              guestvault export-swtpm --vault DIR vm1.state \\
                  --pwdfile /etc/vtpm/pass --force /srv/vtpm/vm1 --json
            """)

    @OptionGroup var vault: VaultOptions

    @Argument(help: ArgumentHelp("The container file.", valueName: "state"))
    var state: String

    @OptionGroup var keys: SwtpmKeyOptions

    @Flag(help: "Replace the swtpm state files in a directory that is not empty.")
    var force = false

    @Flag(help: "Open even if the vault has seen a newer generation of this VM (an older copy was put back).")
    var allowRollback = false

    @Argument(help: ArgumentHelp("The swtpm state directory to write.", valueName: "swtpmdir"))
    var swtpmDirectory: String

    @Flag(help: "Print the export report as JSON.")
    var json = false

    func run() throws {
        let keyOption = try keys.option()
        let key = try keyOption?.load()
        let container = try GuestStateContainer.open(at: state)
        try container.unlock(with: vault.credentials(), allowRollback: allowRollback)
        let report = try SwtpmInterop.exportState(from: container, to: swtpmDirectory, key: key, overwrite: force)
        try keyOption?.removeFileIfAsked()
        if json { try printJSON(report); return }
        print("Exported \(state) (generation \(report.generation)) to \(swtpmDirectory)\(report.key.map { " (encrypted: \($0))" } ?? "")")
        for file in report.files {
            print("  \(file.entry.padding(toLength: 14, withPad: " ", startingAt: 0)) -> \(file.file.padding(toLength: 22, withPad: " ", startingAt: 0)) \(formatBytes(UInt64(file.fileBytes)))")
        }
        for file in report.removedFiles { print("  removed \(file) (the container has no such state)") }
    }
}
