import FoundationEssentials
import Glibc
import GuestVaultCore
import GuestVaultSystem

/// Runs the swtpm-compatible front end this binary was called as: `swtpm`,
/// `swtpm_setup` or `swtpm_ioctl` (a link to `guestvault` under that name, see
/// scripts/install-frontends.sh), or `guestvault swtpm ...` and so on.
public enum FrontEndDispatch {
    static let names = ["swtpm", "swtpm_setup", "swtpm_ioctl"]

    /// The front end and its arguments, nil when this is the `guestvault` CLI.
    static func frontEnd(for arguments: [String]) -> (name: String, arguments: [String])? {
        guard let first = arguments.first else { return nil }
        let base = first.split(separator: "/").last.map(String.init) ?? first
        if names.contains(base) { return (base, Array(arguments.dropFirst())) }
        if arguments.count >= 2, names.contains(arguments[1]) { return (arguments[1], Array(arguments.dropFirst(2))) }
        return nil
    }

    /// Runs the front end named in CommandLine.arguments and exits, or returns for the CLI.
    public static func runIfCalledByName() {
        guard let (name, arguments) = frontEnd(for: CommandLine.arguments) else { return }
        let status: Int32
        do {
            switch name {
            case "swtpm": status = try SwtpmFrontEnd.run(arguments)
            case "swtpm_setup": status = try SwtpmSetupFrontEnd.run(arguments)
            default: status = try SwtpmIoctlFrontEnd.run(arguments)
            }
        } catch {
            let message = ErrorChain.message(of: error)
            Descriptors.write("\(message.hasPrefix(name + ":") ? "" : name + ": ")\(message)\n", to: 2)
            exit(ErrorChain.category(of: error).exitCode)
        }
        exit(status)
    }
}
