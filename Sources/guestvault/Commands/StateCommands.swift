import ArgumentParser
import Foundation
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultTPM
import GuestVaultTPMContainer
import GuestVaultVM

struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a sealed guest state container for a VM.",
        discussion: """
            The container gets a random guest state protection key (DEK), wrapped under the
            VM's key-encryption key from the vault. Add a recovery slot for another X25519
            key (for example another vault's `guestvault vault recipient`) with
            --recovery-recipient.

            Example:
              guestvault create --vault /var/lib/guestvault/vault --vm 6f1d2c3b-4a59-4e68-8d7c-0b1a2f3e4d5c vm1.state
            """)

    @OptionGroup var vault: VaultOptions

    @Option(help: ArgumentHelp("The VM's UUID; the container is bound to it.", valueName: "uuid"))
    var vm: VMIdentifier

    @Option(help: ArgumentHelp("Also wrap the key for this X25519 public key (64 hex digits), e.g. a recovery vault's.", valueName: "hex"))
    var recoveryRecipient: [RecipientKeyArgument] = []

    @Flag(help: "Manufacture a TPM 2.0 in the container (SHA-256 PCR bank), as swtpm_setup does.")
    var tpm = false

    @Flag(help: "With --tpm: create the RSA-2048 and ECC P-256 endorsement keys (TCG default templates) at 0x81010001 and 0x81010002, with certificates from the vault's host CA in NV 0x01C00002 and 0x01C0000A.")
    var ek = false

    // Trusted launch (TrustedLaunchCommands.swift, docs/TRUSTED-LAUNCH.md).
    @Flag(help: "Seed the entry uefi.vars with OVMF's variable store template (/usr/share/OVMF/OVMF_VARS_4M.fd).")
    var uefi = false

    @Flag(help: "With --uefi: the template with Microsoft's keys enrolled, Secure Boot on (OVMF_VARS_4M.ms.fd; pair it with OVMF_CODE_4M.ms.fd).")
    var secureBoot = false

    @Option(help: ArgumentHelp("With --uefi: seed uefi.vars from this VARS file instead.", valueName: "file"))
    var uefiTemplate: String?

    @Argument(help: ArgumentHelp("The container file to create.", valueName: "state"))
    var state: String

    @Flag(help: "Print the new container's metadata as JSON.")
    var json = false

    func validate() throws {
        if ek && !tpm { throw ValidationError("--ek goes with --tpm") }
        if (secureBoot || uefiTemplate != nil) && !uefi { throw ValidationError("--secure-boot and --uefi-template go with --uefi") }
    }

    func run() throws {
        let vmID = vm.uuid
        let recipients = recoveryRecipient.map(\.key)
        let keyVault = try vault.open()
        let container = try GuestStateContainer.create(
            at: state, vm: vmID, vault: keyVault,
            extraSlots: recipients.map { recipient in { dek in try .wrapForRecipient(dek, recipient: recipient, vm: vmID) } })
        var manufactured: TPMManufacturer.Report?
        if tpm {
            do {
                manufactured = try TPMManufacturer.manufacture(
                    into: container, options: .init(createEndorsementKeys: ek, issueCertificate: ek ? try EKCertificates.issuer(vault: keyVault, vm: vmID) : nil))
            } catch {
                // Nothing half-made: the container goes if its TPM could not be made.
                try? FileManager.default.removeItem(atPath: state)
                throw error
            }
        }
        let seeded: (template: String, bytes: Int)?
        do { seeded = try seedUEFI(into: container) } catch {
            try? FileManager.default.removeItem(atPath: state)
            throw error
        }
        if json {
            struct Created: Encodable { let container: ContainerInfo; let tpm: TPMManufacturer.Report? }
            try printJSON(Created(container: container.info, tpm: manufactured))
        } else {
            print("Created \(state) for VM \(vmID.uuidString.lowercased()), generation \(container.generation), \(container.slots.slots.count) key slot(s)")
            if let seeded { print("  uefi.vars: \(seeded.bytes) bytes from \(seeded.template)") }
            if let manufactured {
                print(String(format: "  TPM 2.0 manufactured in %.1f ms (%d bytes of permanent state)", manufactured.milliseconds, manufactured.permanentStateBytes))
                if ek {
                    print("  EKs: RSA-2048 at 0x81010001, ECC P-256 at 0x81010002; certificates in NV 0x01C00002 (\(manufactured.rsaCertificateBytes ?? 0) bytes) and 0x01C0000A (\(manufactured.eccCertificateBytes ?? 0) bytes)")
                }
            }
        }
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a container's metadata without any keys: VM, generation, entries, key slots.",
        discussion: "Nothing here is authenticated until the container is unlocked; `guestvault list --vault DIR` checks it.")

    @Argument(help: ArgumentHelp("The container file.", valueName: "state"))
    var state: String

    @Flag(help: "Print as JSON.")
    var json = false

    func run() throws {
        let info = try GuestStateContainer.open(at: state).info
        if json { try printJSON(info); return }
        print("container    \(info.path)")
        print("VM           \(info.vm.uuidString.lowercased())")
        print("container id \(info.containerID)")
        print("generation   \(info.generation)")
        print("created      \(Date(timeIntervalSince1970: TimeInterval(info.created)))")
        print("committed    \(Date(timeIntervalSince1970: TimeInterval(info.committed)))")
        print("file         \(formatBytes(UInt64(info.fileSize))) (\(formatBytes(UInt64(info.liveBytes))) live)")
        print("key slots    \(info.slots.count)")
        for slot in info.slots { print("  \(slot.index): \(slot.detail)") }
        print("entries      \(info.entries.count)")
        for entry in info.entries {
            print("  \(entry.name.padding(toLength: 16, withPad: " ", startingAt: 0)) \(entry.kind.padding(toLength: 6, withPad: " ", startingAt: 0)) \(formatBytes(entry.size)) (sealed at generation \(entry.sealedGeneration))")
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List a container's entries; with --vault, unlock it first so the list is authenticated.")

    @OptionGroup var vault: VaultOptions

    @Argument(help: ArgumentHelp("The container file.", valueName: "state"))
    var state: String

    @Flag(help: "Print as JSON.")
    var json = false

    func run() throws {
        let container = try GuestStateContainer.open(at: state)
        var verified = false
        if vault.namesVault || !vault.recoveryKeyFiles.isEmpty {
            try container.unlock(with: vault.credentials())
            verified = true
        }
        let entries = container.info.entries
        if json {
            struct Listing: Encodable { let generation: UInt64; let verified: Bool; let entries: [EntryInfo] }
            try printJSON(Listing(generation: container.generation, verified: verified, entries: entries))
            return
        }
        for entry in entries {
            print("\(entry.name)\t\(entry.kind)\t\(entry.size)")
        }
        if !verified {
            FileHandle.standardError.write(Data("note: not authenticated; pass --vault DIR to check the list\n".utf8))
        }
    }
}

struct Put: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Seal a file (or standard input) into a container entry and commit.",
        discussion: """
            Inputs up to 16 MiB become one sealed blob; larger ones a sealed stream of 256 KiB
            chunks, sealed in parallel with constant memory.

            Examples:
              guestvault put --vault DIR vm1.state uefi.nvram OVMF_VARS.fd
              cat runtime.bin | guestvault put --vault DIR vm1.state vm.runtime -
            """)

    @OptionGroup var vault: VaultOptions

    @Argument(help: ArgumentHelp("The container file.", valueName: "state"))
    var state: String

    @Argument(help: ArgumentHelp("The entry name, e.g. uefi.nvram (1 to 255 bytes, no control characters).", valueName: "name"))
    var entry: EntryNameArgument

    @Argument(help: ArgumentHelp("The input file, or - for standard input (the default).", valueName: "file"))
    var file: InputPath?

    var name: String { entry.name }

    static let blobLimit = 16 << 20

    func run() throws {
        let container = try GuestStateContainer.open(at: state, access: .readWrite)
        try container.unlock(with: vault.credentials())
        let source = try ByteSource(file)
        // Read up to the blob limit; if the input ends there it is a blob.
        var head: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while head.count <= Self.blobLimit {
            let n = try source.read(into: &buffer)
            if n == 0 { break }
            head += buffer[0..<n]
        }
        if head.count <= Self.blobLimit {
            try container.write(name, head)
        } else {
            var prefix = head[...]
            try container.writeStream(name) { out in
                if !prefix.isEmpty {
                    let n = min(out.count, prefix.count)
                    out.replaceSubrange(0..<n, with: prefix.prefix(n))
                    prefix = prefix.dropFirst(n)
                    return n
                }
                return try source.read(into: &out)
            }
        }
        let generation = try container.commit()
        FileHandle.standardError.write(Data("sealed \(name) into \(state), generation \(generation)\n".utf8))
    }
}

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Open a container entry to a file (or standard output).",
        discussion: "A file output appears (mode 0600) only once the whole entry has verified.")

    @OptionGroup var vault: VaultOptions

    @Argument(help: ArgumentHelp("The container file.", valueName: "state"))
    var state: String

    @Argument(help: ArgumentHelp("The entry name.", valueName: "name"))
    var entry: EntryNameArgument

    @Argument(help: ArgumentHelp("The output file, or - for standard output (the default). A regular file there is replaced once the entry has verified; a symlink, device or FIFO is refused.", valueName: "file"))
    var file: OutputPath?

    var name: String { entry.name }

    @Flag(help: "Open even if the vault has seen a newer generation of this VM (an older copy was put back).")
    var allowRollback = false

    func run() throws {
        let container = try GuestStateContainer.open(at: state)
        try container.unlock(with: vault.credentials(), allowRollback: allowRollback)
        // An unpublished staged file is removed when the sink goes away.
        let sink = try ByteSink(file)
        try container.readStream(name) { try sink.write($0) }
        try sink.finish()
    }
}

struct Rekey: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rotate a container's keys: the VM's KEK epoch (default) or, with --dek, the DEK itself.",
        discussion: """
            Without --dek, the vault slots are re-wrapped under the VM's KEK at a new epoch;
            the sealed entries are not touched. With --dek, a new random DEK replaces the old
            one and every entry is re-encrypted into a new file that replaces the old one
            atomically; passphrase slots are dropped (add them again afterwards).

            With --to-vault DIR, the container is opened with the vault and/or
            --recovery-key FILE and its key is re-wrapped for the vault in DIR: that vault's
            slot replaces the other vaults' slots (recovery slots stay), and the new vault
            keeps its rollback counter from then on.

            Example (the old vault is lost):
              guestvault rekey --recovery-key /safe/recovery.key --to-vault /var/lib/guestvault/vault vm1.state
            """)

    @OptionGroup var vault: VaultOptions

    @Argument(help: ArgumentHelp("The container file.", valueName: "state"))
    var state: String

    @Flag(help: "Replace the DEK and re-encrypt every entry.")
    var dek = false

    @Option(help: ArgumentHelp("The new KEK epoch (default: the current one plus one; with --to-vault, 1).", valueName: "n"))
    var epoch: UInt32?

    @Option(help: ArgumentHelp("Re-wrap the key for this vault (opened with --to-vault-passphrase-file if it has a passphrase).", valueName: "dir"))
    var toVault: String?

    @Option(help: ArgumentHelp("A file holding the --to-vault vault's passphrase (mode 0600).", valueName: "file"))
    var toVaultPassphraseFile: String?

    @Flag(help: "With --to-vault: take the container even if a vault has seen a newer generation of it.")
    var allowRollback = false

    func validate() throws {
        if toVault != nil && dek { throw ValidationError("--to-vault and --dek go in two steps: re-wrap first, then rotate the DEK") }
    }

    func run() throws {
        if let toVault {
            let newVault = try KeyVault.open(at: toVault, passphrase: toVaultPassphraseFile.map { try readSecretFile($0, what: "passphrase") })
            let container = try GuestStateContainer.open(at: state, access: .readWrite)
            let slot = try container.unlock(with: vault.credentials(), allowRollback: allowRollback)
            let opened = container.slots.slots[slot].kind
            let generation = try container.adoptVault(newVault, epoch: epoch ?? 1, allowRollback: allowRollback)
            try container.flush()
            print("Re-wrapped the key of \(state) (opened by its \(opened) slot) for vault \(toVault); generation \(generation)")
            return
        }
        let keyVault = try vault.open()
        let container = try GuestStateContainer.open(at: state, access: .readWrite)
        try container.unlock(with: UnlockCredentials(vault: keyVault))
        if dek {
            let generation = try container.rotateDEK()
            print("Replaced the DEK of \(state) and re-encrypted \(container.entryNames.count) entries; generation \(generation)")
        } else {
            let current = container.slots.slots.compactMap { slot -> UInt32? in
                if case .vault(let id, let epoch, _) = slot, id == keyVault.rootKeyID { return epoch }
                return nil
            }.max() ?? 0
            let target: UInt32
            if let epoch {
                target = epoch
            } else {
                do {
                    target = try Checked.next(current, "the next KEK epoch after \(current)")
                } catch {
                    throw CLIError(.epochExhausted, "the vault slots of \(state) are at the last KEK epoch (\(current)); rotate the DEK with `guestvault rekey --dek` instead", underlying: error)
                }
            }
            guard target != current else { throw CLIError(.badArguments, "the vault slots are already at epoch \(target)") }
            let generation = try container.rotateKEK(to: target)
            print("Re-wrapped the key of \(state) under KEK epoch \(target); generation \(generation)")
        }
    }
}
