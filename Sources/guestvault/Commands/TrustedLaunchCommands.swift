import ArgumentParser
import Foundation
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultTPM
import GuestVaultTPMContainer
import GuestVaultUEFI
import GuestVaultVM
import Logging

// Trusted launch (docs/TRUSTED-LAUNCH.md): the UEFI variables sealed beside the vTPM, and
// boot-integrity checks from the host (`pcrs`, `policy record|check`).

extension Create {
    /// `create --uefi [--secure-boot] [--uefi-template FILE]`: seeds `uefi.vars`.
    func seedUEFI(into container: GuestStateContainer) throws -> (template: String, bytes: Int)? {
        guard uefi else { return nil }
        let template = uefiTemplate ?? (secureBoot ? OVMFTemplates.secureBoot : OVMFTemplates.plain)
        let bytes = try FileSystem.readFile(template, limit: UEFIVarsFile.maximumSize)
        do {
            _ = try VariableStore.parse(bytes)
        } catch {
            throw ValidationError("\(template) is not an OVMF variable store: \(error.message)")
        }
        try container.write(UEFIVarsFile.entryName, bytes)
        try container.commit()
        return (template, bytes.count)
    }
}

/// Reads PCRs from a running VM's serve (host channel) or from a stopped VM's container.
struct PCRSource {
    let state: String
    let socket: String?
    let vault: VaultOptions
    let allowRollback: Bool

    /// The values and where they came from.
    func read(_ selection: Set<Int>) throws -> (values: [Int: [UInt8]], source: String) {
        if let socket {
            let reply = try HostChannelClient.request("pcrs \(Self.text(selection))", socket: socket)
            var values: [Int: [UInt8]] = [:]
            for (key, value) in reply.pcrs ?? [:] {
                guard let index = Int(key), let digest = bytes(fromHex: value), digest.count == 32 else {
                    throw BootPolicyError(.bootPolicyMalformed, "serve answered PCR \"\(key.prefix(8))\" = \"\(value.prefix(80))\"")
                }
                values[index] = digest
            }
            return (values, "running VM (serve at \(socket))")
        }
        let container = try GuestStateContainer.open(at: state)
        try container.unlock(with: UnlockCredentials(vault: vault.open()), allowRollback: allowRollback)
        guard container.entryNames.contains(EntryName.tpmPermanent) else {
            throw ValidationError("\(state) holds no TPM")
        }
        guard container.entryNames.contains(EntryName.tpmVolatile) else {
            throw ValidationError("\(state) holds no stored volatile state, so the PCRs of its last boot are gone (serve stores them on SIGTERM and on STORE_VOLATILE); for a running VM give --socket")
        }
        let memory = MemoryTPMStorage([.permanent: try container.read(EntryName.tpmPermanent),
                                       .volatile: try container.read(EntryName.tpmVolatile)])
        let engine = try TPMEngine.start(storage: memory)
        defer { try? engine.stop() }
        return (try engine.pcrValues(selection), "stopped VM (volatile state stored at generation \(container.generation))")
    }

    static func text(_ selection: Set<Int>) -> String { selection.sorted().map(String.init).joined(separator: ",") }
}

/// A client of serve's host channel (one request a connection, one JSON line back).
enum HostChannelClient {
    struct Reply: Decodable {
        var ok: Bool
        var pcrs: [String: String]?
        var policy: BootPolicy?
        var status: TrustedLaunchService.PolicyStatus?
        var sealed: Bool?
        var error: String?
        var code: String?
    }

    static func request(_ line: String, socket: String) throws -> Reply {
        let connection = try StreamSocket.connect(.unix(path: socket))
        defer { connection.close() }
        try connection.setTimeout(seconds: 10)
        try connection.send(Array((line + "\n").utf8))
        var bytes: [UInt8] = []
        while !bytes.contains(UInt8(ascii: "\n")) && bytes.count < 1 << 20 {
            let piece = try connection.receive()
            if piece.isEmpty { break }
            bytes += piece
        }
        let reply: Reply
        do { reply = try JSONDecoder().decode(Reply.self, from: Data(bytes)) } catch {
            throw ValidationError("serve at \(socket) answered something that is not its host-channel JSON")
        }
        guard reply.ok else { throw ValidationError("serve at \(socket): \(reply.error ?? "failed") (\(reply.code ?? "failure"))") }
        return reply
    }
}

struct PCRsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pcrs",
        abstract: "Show a VM's SHA-256 PCRs: of a running VM through serve's host channel, of a stopped VM from its container.",
        discussion: """
            A running VM: give --socket, the --host-socket of its `guestvault serve`; the PCRs
            are read between the guest's TPM commands (no handles, nothing the guest sees).
            A stopped VM: the PCRs of the volatile state serve stored when it stopped.

            Examples:
              guestvault pcrs --vault DIR vm1.state --socket /run/guestvault/vm1.host.sock
              guestvault pcrs --vault DIR vm1.state --pcrs 0-7,14 --json
            """)

    @OptionGroup var vault: VaultOptions

    @Argument(help: ArgumentHelp("The VM's container.", valueName: "state"))
    var state: String

    @Option(help: ArgumentHelp("serve's host channel (its --host-socket), for a running VM.", valueName: "path"))
    var socket: String?

    @Option(help: ArgumentHelp("Which PCRs: 0-7, 0,2,7 or all.", valueName: "selection"))
    var pcrs: String = "0-23"

    @Flag(help: "Open even if the vault has seen a newer generation of this VM.")
    var allowRollback = false

    @Flag(help: "Print as JSON.")
    var json = false

    func run() throws {
        let selection = try BootPolicy.selection(pcrs)
        let (values, source) = try PCRSource(state: state, socket: socket, vault: vault, allowRollback: allowRollback).read(selection)
        if json {
            struct Out: Encodable { let source: String; let bank: String; let pcrs: [String: String] }
            try printJSON(Out(source: source, bank: "sha256", pcrs: Dictionary(uniqueKeysWithValues: values.map { (String($0.key), hexString($0.value)) })))
            return
        }
        print("sha256 PCRs of the \(source):")
        for (index, value) in values.sorted(by: { $0.key < $1.key }) {
            print("  \(index < 10 ? " " : "")\(index): \(hexString(value))")
        }
    }
}

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Record a known-good boot's PCRs as the VM's golden policy, and check later boots against it.",
        discussion: """
            The policy is sealed in the container (entry policy.pcrs). `policy check` exits 15
            on a mismatch and names the PCRs that differ, in text or --json, for monitoring.
            `guestvault serve --check-policy` checks once the firmware has finished measuring.
            """,
        subcommands: [Record.self, Check.self, Status.self])

    struct Record: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record the PCRs of this boot (running: through serve, which seals them; stopped: from the stored volatile state).",
            discussion: """
              guestvault policy record --vault DIR vm1.state --socket /run/guestvault/vm1.host.sock
              guestvault policy record --vault DIR vm1.state --pcrs 0-7
            """)

        @OptionGroup var vault: VaultOptions
        @Argument(help: ArgumentHelp("The VM's container.", valueName: "state")) var state: String
        @Option(help: ArgumentHelp("serve's host channel, for a running VM.", valueName: "path")) var socket: String?
        @Option(help: ArgumentHelp("Which PCRs: 0-7 (the default), 0,2,7 or all.", valueName: "selection")) var pcrs: String = "0-7"
        @Flag(help: "Open even if the vault has seen a newer generation of this VM.") var allowRollback = false
        @Flag(help: "Print the recorded policy as JSON.") var json = false

        func run() throws {
            let selection = try BootPolicy.selection(pcrs)
            let policy: BootPolicy
            if let socket {
                guard let recorded = try HostChannelClient.request("policy-record \(PCRSource.text(selection))", socket: socket).policy else {
                    throw ValidationError("serve at \(socket) recorded no policy")
                }
                policy = recorded
            } else {
                let values = try PCRSource(state: state, socket: nil, vault: vault, allowRollback: allowRollback).read(selection).values
                policy = BootPolicy(values: values)
                let container = try GuestStateContainer.open(at: state, access: .readWrite)
                try container.unlock(with: UnlockCredentials(vault: vault.open()), allowRollback: allowRollback)
                try container.write(BootPolicy.entryName, try policy.encoded())
                try container.commit()
                try container.flush()
            }
            if json { try printJSON(policy); return }
            print("Recorded the boot policy of \(state): PCRs \(PCRSource.text(Set(try policy.values().keys))) (sha256)")
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare the VM's PCRs with its recorded policy; exit 15 and name the PCRs that differ.",
            discussion: """
              guestvault policy check --vault DIR vm1.state --socket /run/guestvault/vm1.host.sock --json
            """)

        @OptionGroup var vault: VaultOptions
        @Argument(help: ArgumentHelp("The VM's container.", valueName: "state")) var state: String
        @Option(help: ArgumentHelp("serve's host channel, for a running VM.", valueName: "path")) var socket: String?
        @Flag(help: "Open even if the vault has seen a newer generation of this VM.") var allowRollback = false
        @Flag(help: "Print the result as JSON.") var json = false

        func run() throws {
            let container = try GuestStateContainer.open(at: state)
            try container.unlock(with: UnlockCredentials(vault: vault.open()), allowRollback: allowRollback)
            guard container.entryNames.contains(BootPolicy.entryName) else {
                throw BootPolicyError(.bootPolicyMissing, "\(state) holds no boot policy; record one with `guestvault policy record`")
            }
            let policy = try BootPolicy.decode(try container.read(BootPolicy.entryName))
            let selection = Set(try policy.values().keys)
            let (values, source) = try PCRSource(state: state, socket: socket, vault: vault, allowRollback: allowRollback).read(selection)
            let mismatched = try policy.mismatches(current: values)
            if json {
                struct Out: Encodable {
                    let result: String; let source: String; let pcrs: [Int]; let mismatched: [BootPolicy.Mismatch]; let recorded: Int64
                }
                try printJSON(Out(result: mismatched.isEmpty ? "pass" : "mismatch", source: source, pcrs: selection.sorted(),
                                  mismatched: mismatched, recorded: policy.recorded))
            } else if mismatched.isEmpty {
                print("pass: PCRs \(PCRSource.text(selection)) of the \(source) match the policy recorded \(Date(timeIntervalSince1970: TimeInterval(policy.recorded)))")
            } else {
                print("MISMATCH: PCR \(mismatched.map { String($0.pcr) }.joined(separator: ", ")) of the \(source) differ from the recorded policy")
                for m in mismatched { print("  PCR \(m.pcr): recorded \(m.recorded), now \(m.current.isEmpty ? "(absent)" : m.current)") }
            }
            if !mismatched.isEmpty {
                let error = BootPolicyError(.bootPolicyMismatch, "boot policy mismatch in \(state): PCR \(mismatched.map { String($0.pcr) }.joined(separator: ", "))")
                FileHandle.standardError.write(Data("guestvault: \(error.message)\n".utf8))
                throw ExitCode(ErrorCategory.policyMismatch.exitCode)
            }
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The result of `serve --check-policy` for a running VM: waiting, pass, mismatch (exit 15), no-policy or error.",
            discussion: """
              guestvault policy status --socket /run/guestvault/vm1.host.sock --json
            """)

        @Option(help: ArgumentHelp("serve's host channel (its --host-socket).", valueName: "path")) var socket: String
        @Flag(help: "Print the status as JSON.") var json = false

        func run() throws {
            guard let status = try HostChannelClient.request("policy-status", socket: socket).status else {
                throw ValidationError("serve at \(socket) sent no policy status")
            }
            if json {
                try printJSON(status)
            } else {
                print("\(status.result)\(status.mismatched.isEmpty ? "" : ": PCR " + status.mismatched.map { String($0.pcr) }.joined(separator: ", "))\(status.message.map { " (\($0))" } ?? "")")
            }
            if status.result == "mismatch" {
                FileHandle.standardError.write(Data("guestvault: boot policy mismatch: PCR \(status.mismatched.map { String($0.pcr) }.joined(separator: ", "))\n".utf8))
                throw ExitCode(ErrorCategory.policyMismatch.exitCode)
            }
        }
    }
}
