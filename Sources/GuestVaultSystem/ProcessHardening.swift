#if canImport(Glibc)
import Glibc
#endif
internal import CLinuxProcess

/// Keeps a process that holds keys from being read through its memory: not dumpable
/// (no core file, no ptrace or /proc/PID/mem access by other processes of the same
/// user). The key storage itself (``SecretBytes``) is kept out of core dumps and swap
/// by the crypto core.
///
/// `GUESTVAULT_DUMPABLE=1` in the environment leaves the process dumpable, for
/// debugging a crash with a core file or a debugger (docs/KEYS.md); never in production.
public enum ProcessHardening {
    /// The opt-out environment variable.
    public static let optOutVariable = "GUESTVAULT_DUMPABLE"

    /// Whether the opt-out is set.
    public static var isOptedOut: Bool {
        guard let value = getenv(optOutVariable) else { return false }
        return String(cString: value) == "1"
    }

    /// Marks the process non-dumpable (PR_SET_DUMPABLE 0) unless opted out. Returns
    /// whether the process is now non-dumpable.
    @discardableResult
    public static func apply() -> Bool {
        if isOptedOut { return false }
        return guestvault_set_dumpable(0) == 0
    }

    /// Whether the process is dumpable now (PR_GET_DUMPABLE).
    public static var isDumpable: Bool {
        guestvault_get_dumpable() > 0
    }
}
