import ArgumentParser
import Foundation
import GuestVaultCore
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultUEFI
import GuestVaultVM

/// `guestvault uefi list|show`: a VM's UEFI variable store, from an OVMF VARS file or a
/// container entry, parsed as hostile input (docs/UEFI.md).
struct UEFICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uefi",
        abstract: "Read a VM's UEFI variable store (OVMF VARS): its variables and Secure Boot keys.",
        discussion: """
            The input is an OVMF VARS file (recognised by the "_FVH" firmware volume
            signature at byte 40, or forced with --raw), or a guest state container whose
            entry uefi.vars (or uefi.nvram, or --entry NAME) holds one; a container is
            unlocked with the vault as `guestvault get` does. Nothing is written.

            `list` prints one line per variable; `show` prints the Secure Boot summary
            (SecureBoot, SetupMode, PK/KEK/db/dbx with certificate subjects and hash
            counts) and then the variables. Deleted variables (replaced or removed, kept
            until the store is reclaimed) appear only with --all.

            Examples:
              guestvault uefi show /usr/share/OVMF/OVMF_VARS_4M.ms.fd
              guestvault uefi list --all --json /usr/share/OVMF/OVMF_VARS_4M.ms.fd
              guestvault uefi show --vault DIR vm1.state
            The byte layout and the limits are in docs/UEFI.md.
            """,
        subcommands: [UEFIList.self, UEFIShow.self]
    )
}

/// A failure of the `uefi` verb itself (the parser's errors are ``UEFIFormatError``s).
enum UEFICommandErrorDomain {}
typealias UEFICommandError = DomainError<UEFICommandErrorDomain>

extension ErrorCode {
    static let uefiEntryMissing = ErrorCode("uefiEntryMissing", .notFound)
    static let uefiInputTooLarge = ErrorCode("uefiInputTooLarge", .limit)
}

/// The input of `uefi list` and `uefi show`: a VARS file or a container.
struct UEFIInput: ParsableArguments {
    @OptionGroup var vault: VaultOptions

    @Flag(help: "Read FILE as a raw OVMF VARS file even if it does not start like one (the default is to detect the \"_FVH\" signature).")
    var raw = false

    @Option(help: ArgumentHelp("The container entry that holds the variable store (default: uefi.vars, then uefi.nvram).", valueName: "name"))
    var entry: String?

    @Flag(help: "With a container: open it even if the vault has seen a newer generation of this VM.")
    var allowRollback = false

    @Argument(help: ArgumentHelp("An OVMF VARS file, or a guest state container.", valueName: "file|state"))
    var input: String

    /// The largest store read (a 4 MiB OVMF build's VARS file is 528 KiB).
    static let limit = VariableStore.Limits.standard.maximumInputBytes

    /// The store's bytes and where they came from.
    func load() throws -> (bytes: [UInt8], source: String) {
        let file = try SafeOpen.existing(input, mode: .readOnly)
        let size = try file.size()
        let head = try file.read(at: 0, count: Int(min(size, 44)))
        if raw || entry == nil && VariableStore.looksLikeFirmwareVolume(head) {
            guard size <= Int64(Self.limit) else {
                throw UEFICommandError(.uefiInputTooLarge, "\(input) is \(size) bytes; a VARS file is at most \(Self.limit) bytes")
            }
            let bytes = try file.read(at: 0, count: Int(size))
            return (bytes, "\(input) (VARS file)")
        }
        let container = try GuestStateContainer.open(at: input)
        try container.unlock(with: vault.credentials(), allowRollback: allowRollback)
        let names = container.entryNames
        let name: String
        if let entry {
            name = entry
        } else if let found = ["uefi.vars", "uefi.nvram"].first(where: names.contains) {
            name = found
        } else {
            throw UEFICommandError(.uefiEntryMissing, "\(input) has no uefi.vars or uefi.nvram entry (entries: \(names.joined(separator: ", "))); put the VARS file there with `guestvault put STATE uefi.vars FILE`, or name the entry with --entry")
        }
        guard names.contains(name) else {
            throw UEFICommandError(.uefiEntryMissing, "\(input) has no entry \(name)")
        }
        if let info = container.info.entries.first(where: { $0.name == name }), info.size > UInt64(Self.limit) {
            throw UEFICommandError(.uefiInputTooLarge, "\(input) entry \(name) is \(info.size) bytes; a VARS file is at most \(Self.limit) bytes")
        }
        return (try container.read(name), "\(input) entry \(name)")
    }
}

/// One variable as `uefi list --json` and `uefi show --json` print it.
struct UEFIVariableRow: Encodable {
    let offset: Int
    let name: String
    let guid: String
    let attributes: String
    let attributesValue: UInt32
    let state: String
    let stateValue: UInt8
    let size: Int
    let monotonicCount: UInt64?
    let timestamp: String?
    let publicKeyIndex: UInt32?

    init(_ variable: UEFIVariable) {
        offset = variable.offset
        name = variable.printableName
        guid = variable.vendor.description
        attributes = variable.attributes.shortNames
        attributesValue = variable.attributes.rawValue
        state = variable.status.rawValue
        stateValue = variable.state
        size = variable.data.count
        monotonicCount = variable.monotonicCount
        timestamp = variable.timestamp.flatMap { $0.isZero ? nil : $0.description }
        publicKeyIndex = variable.publicKeyIndex
    }

    static func rows(_ store: VariableStore, all: Bool) -> [UEFIVariableRow] {
        (all ? store.variables : store.liveVariables).map(UEFIVariableRow.init)
    }

    static func printTable(_ rows: [UEFIVariableRow], all: Bool) {
        print("offset    \(all ? "state                " : "")attributes       size  guid                                  name")
        for row in rows {
            let offset = "0x" + String(row.offset, radix: 16)
            let state = all ? pad("\(row.state) (0x\(String(row.stateValue, radix: 16)))", 21) + " " : ""
            print("\(pad(offset, 9)) \(state)\(pad(row.attributes, 12)) \(leftPad(String(row.size), 8))  \(row.guid)  \(row.name)")
        }
    }
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

func leftPad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}

struct UEFIList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the variables of a UEFI variable store: offset, attributes, size, vendor GUID, name.",
        discussion: """
            Attributes: NV non-volatile, BS boot services, RT runtime, HR hardware error
            record, AW authenticated write, AT time-based authenticated write, AP append
            write, EA enhanced authenticated access.

            Examples:
              guestvault uefi list /usr/share/OVMF/OVMF_VARS_4M.ms.fd
              guestvault uefi list --all --json --vault DIR vm1.state
            """)

    @OptionGroup var input: UEFIInput

    @Flag(help: "Also list deleted, half-written and in-transition variables, with their state.")
    var all = false

    @Flag(help: "Print as JSON.")
    var json = false

    func run() throws {
        let (bytes, source) = try input.load()
        let store = try VariableStore.parse(bytes)
        let rows = UEFIVariableRow.rows(store, all: all)
        if json {
            struct Listing: Encodable { let source: String; let variables: [UEFIVariableRow] }
            try printJSON(Listing(source: source, variables: rows))
            return
        }
        UEFIVariableRow.printTable(rows, all: all)
    }
}

struct UEFIShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show a UEFI variable store: Secure Boot state, PK/KEK/db/dbx, then the variables.",
        discussion: """
            SecureBoot and SetupMode are volatile in OVMF (set at each boot), so a VARS
            file rarely stores them: they are then derived as the firmware would (SetupMode
            while no PK is enrolled; SecureBoot when a PK is enrolled and OVMF's
            SecureBootEnable is not 0) and marked "derived". For PK, KEK, db and dbx it
            prints the size, the attributes, each X.509 certificate's subject, and the
            number of hashes by type.

            Examples:
              guestvault uefi show /usr/share/OVMF/OVMF_VARS_4M.ms.fd
              guestvault uefi show --json --vault DIR vm1.state
            """)

    @OptionGroup var input: UEFIInput

    @Flag(help: "Also list deleted, half-written and in-transition variables, with their state.")
    var all = false

    @Flag(help: "Print as JSON.")
    var json = false

    func run() throws {
        let (bytes, source) = try input.load()
        let store = try VariableStore.parse(bytes)
        let summary = SecureBootSummary(store)
        let rows = UEFIVariableRow.rows(store, all: all)
        let deleted = store.variables.count - store.liveVariables.count
        if json {
            struct Volume: Encodable {
                let length: UInt64; let headerLength: UInt16; let revision: UInt8; let attributes: UInt32
                let blocks: [[UInt32]]
            }
            struct Store: Encodable {
                let offset: Int; let size: UInt32; let authenticated: Bool; let usedBytes: Int; let freeBytes: Int
                let variables: Int; let live: Int
            }
            struct Shown: Encodable {
                let source: String; let volume: Volume; let store: Store; let secureBoot: SecureBootSummary
                let variables: [UEFIVariableRow]
            }
            let volume = store.volume, header = store.header
            try printJSON(Shown(
                source: source,
                volume: Volume(length: volume.length, headerLength: volume.headerLength, revision: volume.revision,
                               attributes: volume.attributes, blocks: volume.blockMap.map { [$0.count, $0.length] }),
                store: Store(offset: header.offset, size: header.size, authenticated: header.authenticated,
                             usedBytes: store.endOfVariables - header.offset, freeBytes: store.freeBytes,
                             variables: store.variables.count, live: store.liveVariables.count),
                secureBoot: summary, variables: rows))
            return
        }
        let volume = store.volume, header = store.header
        print("UEFI variable store   \(source)")
        let blocks = volume.blockMap.map { "\($0.count) x \($0.length) B" }.joined(separator: ", ")
        print("  firmware volume     \(volume.length) bytes, header \(volume.headerLength) bytes, revision \(volume.revision), blocks \(blocks)")
        print("  variable store      \(header.authenticated ? "authenticated" : "plain") at 0x\(String(header.offset, radix: 16)), \(header.size) bytes, \(store.endOfVariables - header.offset) used, \(store.freeBytes) free")
        print("  variables           \(store.liveVariables.count) live, \(deleted) deleted or incomplete")
        print("")
        print("Secure Boot")
        func mode(_ mode: SecureBootSummary.Mode) -> String {
            "\(mode.enabled ? "1 (enabled)" : "0 (disabled)")" + (mode.source == "derived" ? "  [derived; not stored]" : "")
        }
        print("  SecureBoot          \(mode(summary.secureBoot))")
        print("  SetupMode           \(mode(summary.setupMode))")
        print("  SecureBootEnable    \(summary.secureBootEnable.map(String.init) ?? "not stored")")
        print("  CustomMode          \(summary.customMode.map(String.init) ?? "not stored")")
        for database in [summary.pk, summary.kek, summary.db, summary.dbx] {
            guard database.present else {
                print("  \(pad(database.name, 4))                not enrolled")
                continue
            }
            var parts = ["\(database.size) bytes", database.attributes ?? "-",
                         "\(database.lists) list\(database.lists == 1 ? "" : "s")",
                         "\(database.certificates.count) certificate\(database.certificates.count == 1 ? "" : "s")"]
            for (type, count) in database.hashCounts.sorted(by: { $0.key < $1.key }) { parts.append("\(count) \(type) hash\(count == 1 ? "" : "es")") }
            for (type, count) in database.otherCounts.sorted(by: { $0.key < $1.key }) { parts.append("\(count) of type \(type)") }
            if let timestamp = database.timestamp { parts.append("written \(timestamp)") }
            print("  \(pad(database.name, 4))                \(parts.joined(separator: ", "))")
            if let error = database.error { print("      not a valid signature database: \(error)") }
            for certificate in database.certificates {
                print("      \(certificate.subject ?? "unreadable certificate (\(certificate.error ?? "?"))")")
            }
        }
        print("")
        print("Variables\(all ? " (all)" : "")")
        UEFIVariableRow.printTable(rows, all: all)
    }
}
