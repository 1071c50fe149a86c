import Foundation
import Glibc

/// Another local user (`nobody`, uid 65534, present on every Debian system): the
/// attacker of the hardening tests. Tests run as root; `OtherUser.run` runs a command
/// as that user through setpriv(1), and `OtherUser.directory` makes a directory that
/// user owns, the way a container directory shared with (or made by) another tenant
/// looks. (A sticky world-writable directory would not do: the kernel's
/// fs.protected_symlinks already stops root from following another user's symlink
/// there, which would hide the bug a test is after.)
public enum OtherUser {
    public static let uid: UInt32 = 65534
    public static let gid: UInt32 = 65534

    /// Whether the tests can act as another user (root, setpriv present).
    public static var isAvailable: Bool {
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")
    }

    /// Runs `arguments` as the other user; returns the exit status and combined output.
    @discardableResult
    public static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = ["--reuid=\(uid)", "--regid=\(gid)", "--clear-groups", "--"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    /// A new directory under /tmp owned by the other user (mode 0755: others may read
    /// and traverse it, only that user may create files in it). Removed by the caller.
    public static func directory(_ name: String = "gv-attacker") throws -> String {
        let path = "/tmp/\(name)-\(UUID().uuidString.prefix(8))"
        guard mkdir(path, 0o755) == 0, chmod(path, 0o755) == 0, chown(path, uid, gid) == 0 else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        return path
    }

    /// Makes `link` a symlink to `target`, created by the other user.
    public static func symlink(_ target: String, at link: String) throws {
        let result = try run(["/bin/ln", "-s", target, link])
        guard result.status == 0 else { throw POSIXError(.EPERM) }
    }
}
