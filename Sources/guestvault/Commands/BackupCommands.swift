import ArgumentParser
import Foundation
import GuestVaultBackup
import GuestVaultKeys
import GuestVaultVM

struct BackupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Copy containers, as of their last commit, into a backup directory with a manifest; also while their VM runs.",
        discussion: """
            Each container is copied up to the end of its last commit without taking any
            lock (a running `guestvault serve` goes on committing), then the copy is
            opened at that generation, authenticated with the vault (or --recovery-key) and
            every entry read back. The directory (made 0700) gets one file per container,
            `<vm>.<container id>.state` (0600), and `guestvault-backup.json` last.

            The copies stay sealed: restoring them needs the vault or a recovery key
            (docs/BACKUP.md).

            Example:
              guestvault backup --vault DIR vm1.state vm2.state --to /backup/2026-11-30
            """)

    @OptionGroup var vault: VaultOptions

    @Argument(help: ArgumentHelp("The containers to back up.", valueName: "state"))
    var states: [String]

    @Option(help: ArgumentHelp("The backup directory (made if missing; must not hold a backup yet).", valueName: "dir"))
    var to: String

    @Flag(help: "Print the manifest as JSON.")
    var json = false

    func validate() throws {
        if states.isEmpty { throw ValidationError("name at least one container to back up") }
    }

    func run() throws {
        let credentials = try vault.credentials()
        let manifest = try ContainerBackup.backup(states, to: to, credentials: credentials) { item in
            if !json {
                print(String(format: "%@: generation %llu, %@, %d entries, %.1f ms", item.source, item.generation,
                             formatBytes(UInt64(max(item.bytes, 0))), item.entries.count, item.seconds * 1000))
            }
        }
        try credentials.vault?.counters.flush()
        if json { try printJSON(manifest) } else { print("Backed up \(manifest.items.count) container(s) into \(to)") }
    }
}

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Bring the containers of a backup back for a vault: with that vault's slot, or a recovery key when the old vault is lost.",
        discussion: """
            Every copy is checked first (its SHA-256, that it opens and authenticates, and
            that the vault has not seen a newer generation of it); only then are they
            placed in the --to directory under their original file names (which must not
            exist there). A container without a slot of this vault gets one (its other
            vault slots are dropped, recovery slots stay); the vault's rollback counter of
            each container is set. A backup older than what the vault has seen is refused
            unless --allow-rollback, which moves the restored container past it.

            Example (a new host, a new vault, the recovery key):
              guestvault vault init --vault /var/lib/guestvault/vault
              guestvault restore --vault /var/lib/guestvault/vault --recovery-key /safe/recovery.key \\
                  /backup/2026-11-30 --to /var/lib/guestvault/vms
            """)

    @OptionGroup var vault: VaultOptions

    @Argument(help: ArgumentHelp("The backup directory.", valueName: "dir"))
    var backup: String

    @Option(help: ArgumentHelp("Where the containers go (an existing directory).", valueName: "dir"))
    var to: String

    @Flag(help: "Restore even a backup older than what the vault has seen of it (an authorized rollback).")
    var allowRollback = false

    @Flag(help: "Print as JSON.")
    var json = false

    func run() throws {
        let keyVault = try vault.openVault()
        let results = try ContainerBackup.restore(from: backup, to: to, vault: keyVault, recipientKeys: vault.recoveryKeys(),
                                                  allowRollback: allowRollback)
        try keyVault.counters.flush()
        if json { try printJSON(results); return }
        for result in results {
            print("\(result.path): VM \(result.vm.uuidString.lowercased()), opened with its \(result.openedWith) slot, generation \(result.backupGeneration) -> \(result.generation)\(result.rewrapped ? ", key re-wrapped for this vault" : "")")
        }
        print("Restored \(results.count) container(s) into \(to)")
    }
}
