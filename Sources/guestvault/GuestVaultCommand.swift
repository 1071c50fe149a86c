import ArgumentParser
import Foundation
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultSystem
import GuestVaultVM
import Logging

@main
struct GuestVaultCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "guestvault",
        abstract: "Keep a VM's trusted-launch guest state (vTPM, UEFI variables, runtime state) sealed under per-VM keys.",
        discussion: """
            GuestVault seals each piece of a VM's guest state with AES-256-GCM under a key
            derived for that one VM from a key vault, and moves it between hosts in an
            encrypted, authenticated framing.

            Start with `guestvault demo` to see the whole flow on a temporary vault.
            A file vault is named with --vault DIR, or with the GUESTVAULT_VAULT
            environment variable.

            Logging: `guestvault --log-level LEVEL VERB ...` or GUESTVAULT_LOG_LEVEL
            (trace, debug, info, notice, warning, error, critical; default warning), one
            line per record on standard error.

            The process is made non-dumpable (no core file, no ptrace) because it holds
            keys; GUESTVAULT_DUMPABLE=1 leaves it dumpable, for debugging only.

            On failure every verb prints one line, `guestvault: <what failed>`, on
            standard error and exits with a code that says what kind of failure it was:
            \(exitCodeTable)
            """,
        version: GuestVaultVersion.string,
        subcommands: [VaultCommand.self, Create.self, Inspect.self, List.self, Put.self, Get.self, Rekey.self, ImportSwtpm.self, ExportSwtpm.self, Serve.self, Send.self, Receive.self, BenchmarkCommand.self, Demo.self, UEFICommand.self, PCRsCommand.self, PolicyCommand.self, RecoveryKeyCommand.self, BackupCommand.self, RestoreCommand.self, SnapshotCommand.self, ClusterCommand.self]
    )

    /// The exit codes by category, as listed in README.md.
    static var exitCodeTable: String {
        (["    0  success"] + ErrorCategory.allCases.map { category in
            let code = String(category.exitCode)
            return "    \(String(repeating: " ", count: 2 - code.count))\(code)  \(category.rawValue)"
        }).joined(separator: "\n")
    }

    /// Parses the command line and runs the verb; every failure, from parsing or from
    /// the verb, goes through ``Failure`` (one line on standard error, exit code by
    /// category).
    static func main() async {
        let hardened = ProcessHardening.apply()
        // `serve` in a cluster: the VM's lease through GuestVaultCluster (docs/CLUSTER.md).
        ServeCluster.install(ClusterCommand.serveSession)
        // Called as swtpm, swtpm_setup or swtpm_ioctl (libvirt, Proxmox): that front end.
        FrontEndDispatch.runIfCalledByName()
        var arguments = Array(CommandLine.arguments.dropFirst())
        var levelOption: String?
        if arguments.first == "--log-level", arguments.count >= 2 {
            levelOption = arguments[1]
            arguments.removeFirst(2)
        } else if let first = arguments.first, first.hasPrefix("--log-level=") {
            levelOption = String(first.dropFirst("--log-level=".count))
            arguments.removeFirst()
        }
        let level: Logger.Level
        do {
            level = try CLILogging.level(option: levelOption)
        } catch {
            Failure.exit(error)
        }
        // `serve` starts once per VM: a common command line is read without ArgumentParser
        // (ServeSettings.quickParse, docs/PERFORMANCE.md); anything else is parsed below.
        if arguments.first == "serve", let settings = ServeSettings.quickParse(Array(arguments.dropFirst())) {
            do { try settings.run() } catch { Failure.exitAfterVerb(ForeignErrors.readable(error), command: GuestVaultCommand.self) }
            Foundation.exit(0)
        }
        var command: any ParsableCommand
        do {
            // `serve` starts once per VM: parsed alone it skips building the whole verb
            // tree by reflection (about a fifth of its start, docs/PERFORMANCE.md).
            // Anything it does not accept goes the usual way, for the usual messages.
            if arguments.first == "serve", let serve = try? Serve.parse(Array(arguments.dropFirst())) {
                command = serve
            } else {
                command = try parseAsRoot(arguments)
            }
        } catch {
            if exitCode(for: error) == .success {
                let text = fullMessage(for: error)
                if !text.isEmpty { print(text) }
                Foundation.exit(0)
            }
            Failure.exitUsage(error, command: GuestVaultCommand.self)
        }
        // swift-log takes one bootstrap per process. `serve` chooses its own handler for
        // now (its --log-level and --log-file); every other verb logs to stderr.
        if !(command is Serve) {
            CLILogging.bootstrap(level: level)
            Logger(label: "guestvault").debug("started", metadata: [
                "verb": "\(type(of: command).configuration.commandName ?? String(describing: type(of: command)))",
                "nonDumpable": "\(hardened)",
            ])
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            Failure.exitAfterVerb(ForeignErrors.readable(error), command: GuestVaultCommand.self)
        }
    }
}
