import ArgumentParser
import Foundation
import GuestVaultKeys
import GuestVaultState
import GuestVaultVM

struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Named points in time of a container's state, sealed inside it, and an authorized revert.",
        discussion: """
            A snapshot seals a copy of every entry (TPM state, UEFI variables, ...) at the
            current generation inside the container itself, under `snapshot/NAME/`. A revert
            puts those entries back as a new commit: the generation, and the vault's
            rollback counter, move forward, and the revert records itself (who, when, from
            which generation) in the container. These verbs take the writer lock: stop
            `guestvault serve` first (for a running VM use `guestvault backup`).

            Examples:
              guestvault snapshot create --vault DIR vm1.state before-upgrade
              guestvault snapshot list --vault DIR vm1.state
              guestvault snapshot revert --vault DIR vm1.state before-upgrade
              guestvault snapshot delete --vault DIR vm1.state before-upgrade
            """,
        subcommands: [Create.self, List.self, Revert.self, Delete.self])

    static func actor() -> String {
        let uid = getuid()
        let user = getpwuid(uid).flatMap { String(validatingCString: $0.pointee.pw_name) } ?? "uid \(uid)"
        return "\(user) (uid \(uid)) on \(ProcessInfo.processInfo.hostName), pid \(getpid())"
    }

    static func openForWriting(_ state: String, _ vault: VaultOptions) throws -> GuestStateContainer {
        let container = try GuestStateContainer.open(at: state, access: .readWrite)
        try container.unlock(with: vault.credentials())
        return container
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Seal the current state as snapshot NAME.")
        @OptionGroup var vault: VaultOptions
        @Argument(help: ArgumentHelp("The container file.", valueName: "state")) var state: String
        @Argument(help: ArgumentHelp("The snapshot's name (1 to 64 of A-Z a-z 0-9 . _ -).", valueName: "name")) var name: String
        @Flag(help: "Print as JSON.") var json = false

        func run() throws {
            let container = try SnapshotCommand.openForWriting(state, vault)
            let info = try container.createSnapshot(name, takenBy: SnapshotCommand.actor())
            try container.flush()
            if json { try printJSON(info); return }
            print("Snapshot \(name) of \(state): generation \(info.generation), \(info.entries.count) entries; the container is at generation \(container.generation)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the snapshots and the reverts made (authenticated: needs the vault or a recovery key).")
        @OptionGroup var vault: VaultOptions
        @Argument(help: ArgumentHelp("The container file.", valueName: "state")) var state: String
        @Flag(help: "Print as JSON.") var json = false

        func run() throws {
            let container = try GuestStateContainer.open(at: state)
            try container.unlock(with: vault.credentials())
            let snapshots = try container.snapshots(), reverts = try container.revertLog()
            if json {
                struct Listing: Encodable { let generation: UInt64; let snapshots: [SnapshotInfo]; let reverts: [RevertRecord] }
                try printJSON(Listing(generation: container.generation, snapshots: snapshots, reverts: reverts))
                return
            }
            for snapshot in snapshots {
                print("\(snapshot.name)\tgeneration \(snapshot.generation)\t\(Date(timeIntervalSince1970: TimeInterval(snapshot.created)))\t\(snapshot.entries.count) entries\tby \(snapshot.takenBy)")
            }
            for revert in reverts {
                print("reverted to \(revert.snapshot) (generation \(revert.snapshotGeneration)) from generation \(revert.fromGeneration) as generation \(revert.generation), \(Date(timeIntervalSince1970: TimeInterval(revert.reverted))), by \(revert.revertedBy)")
            }
        }
    }

    struct Revert: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Put the state back as snapshot NAME holds it, as a new, recorded commit.")
        @OptionGroup var vault: VaultOptions
        @Argument(help: ArgumentHelp("The container file.", valueName: "state")) var state: String
        @Argument(help: ArgumentHelp("The snapshot's name.", valueName: "name")) var name: String
        @Flag(help: "Print as JSON.") var json = false

        func run() throws {
            let container = try SnapshotCommand.openForWriting(state, vault)
            let record = try container.revert(toSnapshot: name, revertedBy: SnapshotCommand.actor())
            try container.flush()
            if json { try printJSON(record); return }
            print("Reverted \(state) to snapshot \(name) (generation \(record.snapshotGeneration)) from generation \(record.fromGeneration); now generation \(record.generation)")
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove snapshot NAME.")
        @OptionGroup var vault: VaultOptions
        @Argument(help: ArgumentHelp("The container file.", valueName: "state")) var state: String
        @Argument(help: ArgumentHelp("The snapshot's name.", valueName: "name")) var name: String

        func run() throws {
            let container = try SnapshotCommand.openForWriting(state, vault)
            try container.deleteSnapshot(name)
            try container.flush()
            print("Deleted snapshot \(name) of \(state); generation \(container.generation)")
        }
    }
}
