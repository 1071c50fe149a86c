import Foundation

/// swtpm's `--daemon`: the parent starts the server as a child in its own session and
/// returns once the child listens (or failed), as swtpm does.
enum FrontEndDaemon {
    /// Starts this program again with `arguments` (without --daemon) and waits for the
    /// child's readiness line on a pipe; the child's errors go to our standard error.
    static func spawnAndWait(program: String, arguments: [String]) throws -> Int32 {
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        child.arguments = [program] + arguments
        var environment = ProcessInfo.processInfo.environment
        environment[SwtpmFrontEnd.daemonChildVariable] = "1"
        child.environment = environment
        let ready = Pipe()
        child.standardOutput = ready
        child.standardInput = FileHandle.nullDevice
        child.standardError = FileHandle.standardError
        try child.run()
        let line = ready.fileHandleForReading.readDataToEndOfFile()
        if String(decoding: line, as: UTF8.self).hasPrefix("ready") { return 0 }
        child.waitUntilExit()
        return child.terminationStatus == 0 ? 1 : child.terminationStatus
    }

    /// In the daemon child: leave the parent's session and tell the parent we listen,
    /// then let go of the pipe and of the parent's standard error (as swtpm does; the
    /// log goes to --log file=).
    static func reportReady() {
        guard ProcessInfo.processInfo.environment[SwtpmFrontEnd.daemonChildVariable] != nil else { return }
        _ = setsid()
        FileHandle.standardOutput.write(Data("ready\n".utf8))
        let null = open("/dev/null", O_WRONLY)
        if null >= 0 {
            _ = dup2(null, STDOUT_FILENO)
            _ = dup2(null, STDERR_FILENO)
            _ = close(null)
        }
    }
}
