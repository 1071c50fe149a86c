import FoundationEssentials
import Glibc
import GuestVaultSystem

/// swtpm's `--daemon`: the parent starts the server as a child in its own session and
/// returns once the child listens (or failed), as swtpm does.
enum FrontEndDaemon {
    /// Starts this program again with `arguments` (without --daemon) and waits for the
    /// child's readiness line; the child's errors go to our standard error. The child
    /// keeps the descriptors we were given (`--key pwdfd=N`, `--migration-key pwdfd=M`).
    static func spawnAndWait(program: String, arguments: [String]) throws -> Int32 {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        var environment = ProcessInfo.processInfo.environment
        environment[SwtpmFrontEnd.daemonChildVariable] = "1"
        switch try DaemonSpawn.startAndWaitUntilReady(path: executable, arguments: [program] + arguments, environment: environment,
                                                      keeping: passedDescriptors(arguments)) {
        case .ready: return 0
        case .exited(let status): return status == 0 ? 1 : status
        }
    }

    /// The descriptors named in the arguments (`pwdfd=N`, `fd=N` of --key and
    /// --migration-key), which the daemon child reads.
    static func passedDescriptors(_ arguments: [String]) -> Set<Int32> {
        var descriptors: Set<Int32> = []
        for argument in arguments {
            for item in argument.split(separator: ",") {
                for prefix in ["pwdfd=", "fd="] where item.hasPrefix(prefix) {
                    if let descriptor = Int32(item.dropFirst(prefix.count)) { descriptors.insert(descriptor) }
                }
            }
        }
        return descriptors
    }

    /// In the daemon child: leave the parent's session and tell the parent we listen,
    /// then let go of the pipe and of the parent's standard error (as swtpm does; the
    /// log goes to --log file=).
    static func reportReady() {
        guard Environment.value(SwtpmFrontEnd.daemonChildVariable) != nil else { return }
        _ = setsid()
        Descriptors.write("ready\n", to: 1)
        let null = open("/dev/null", O_WRONLY)
        if null >= 0 {
            _ = dup2(null, STDOUT_FILENO)
            _ = dup2(null, STDERR_FILENO)
            _ = close(null)
        }
    }
}
