import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A private directory for one fuzzing process (under `$TMPDIR`), removed when the
/// process exits normally. run.sh points `TMPDIR` at a directory it removes itself, so
/// nothing is left behind when libFuzzer stops the process on a crash either.
public enum FuzzWorkspace {
    public static let directory: String = {
        let parent = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(parent)/guestvault-fuzz.XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            fatalError("fuzz harness: could not create a temporary directory under \(parent): errno \(errno)")
        }
        let path = String(cString: made)
        atexit {
            try? FileManager.default.removeItem(atPath: FuzzWorkspace.directory)
        }
        return path
    }()

    /// A path inside the workspace.
    public static func file(_ name: String) -> String { "\(directory)/\(name)" }

    /// Replaces the contents of `path` with `bytes` (created mode 0600 if missing). The
    /// harness's own I/O: a failure here is a broken machine, not a finding.
    public static func replaceContents(of path: String, with bytes: UnsafeRawBufferPointer) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { fatalError("fuzz harness: cannot open \(path): errno \(errno)") }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { fatalError("fuzz harness: cannot write \(path): errno \(errno)") }
            done += n
        }
    }

    public static func replaceContents(of path: String, with bytes: [UInt8]) {
        bytes.withUnsafeBytes { replaceContents(of: path, with: $0) }
    }
}
