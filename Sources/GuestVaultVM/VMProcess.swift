import ArgumentParser
import FoundationEssentials
import Glibc
import GuestVaultCrypto
import GuestVaultSystem

/// The entry of `guestvault-vm`, the per-VM process on its own: `guestvault-vm serve
/// ...` takes exactly `guestvault serve`'s options, and called as `swtpm`,
/// `swtpm_setup` or `swtpm_ioctl` (or with that name first) it is that front end. It
/// links neither the cluster client nor the CLI's other verbs, so that what starts once
/// per VM is small (docs/PERFORMANCE.md); a cluster member's VM is refused here and
/// served by `guestvault serve`.
public enum VMProcess {
    static let usage = """
        USAGE: guestvault-vm serve <serve options>      (see `guestvault-vm serve --help`)
               guestvault-vm swtpm|swtpm_setup|swtpm_ioctl <their options>
               (or called by one of those names: scripts/install-frontends.sh)

        The per-VM process of GuestVault alone: the vTPM server and the swtpm-compatible
        front ends that libvirt and Proxmox run, without the rest of the `guestvault` CLI.
        `guestvault-vm serve` is `guestvault serve` for a VM outside a cluster.
        """

    public static func main() -> Never {
        _ = ProcessHardening.apply()
        FrontEndDispatch.runIfCalledByName()
        var arguments = Array(CommandLine.arguments.dropFirst())
        switch arguments.first {
        case "serve":
            arguments.removeFirst()
        case "-h", "--help", "help":
            print(usage)
            exit(0)
        case "--version":
            print(GuestVaultVersion.string)
            exit(0)
        default:
            Failure.report(arguments.first.map { "unknown verb \($0); \(usage)" } ?? usage)
            exit(Failure.usageExitCode)
        }
        // The common command lines without ArgumentParser's reflection (ServeSettings).
        if let settings = ServeSettings.quickParse(arguments) {
            do { try settings.run() } catch { Failure.exitAfterVerb(error, command: Serve.self) }
            exit(0)
        }
        let serve: Serve
        do {
            serve = try Serve.parse(arguments)
        } catch {
            if Serve.exitCode(for: error) == .success {
                let text = Serve.fullMessage(for: error)
                if !text.isEmpty { print(text) }
                exit(0)
            }
            Failure.exitUsage(error, command: Serve.self)
        }
        do {
            try serve.run()
        } catch {
            Failure.exitAfterVerb(error, command: Serve.self)
        }
        exit(0)
    }
}
