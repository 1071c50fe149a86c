#if canImport(Glibc)
import Glibc
#endif

/// One environment variable, read with getenv(3): Foundation's
/// `ProcessInfo.processInfo.environment` builds a dictionary of the whole environment for
/// each lookup, which the per-VM process pays at every start (docs/PERFORMANCE.md).
public enum Environment {
    public static func value(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}
