#if canImport(Glibc)
import Glibc
#endif

/// Starts a program as a daemon child the way swtpm's `--daemon` does: the child keeps
/// the descriptors it is told to keep (libvirt's and an operator's `pwdfd=N`, `fd=N`,
/// which Foundation's Process would close) and no other of ours (a descriptor our own
/// parent left open, such as the socket Foundation's Process watches to see its child
/// end, would otherwise stay open in the daemon for as long as it runs); its standard
/// input is /dev/null and its standard output a pipe on which it says "ready" once it
/// listens.
public enum DaemonSpawn {
    public enum Outcome: Sendable, Equatable {
        /// The child said it is ready.
        case ready
        /// The child ended first, with this exit status (128 + N for signal N).
        case exited(Int32)
    }

    /// Starts `path` with `arguments` (argv[0] first) and `environment`, and waits until
    /// it writes a line starting with "ready" to its standard output or ends.
    public static func startAndWaitUntilReady(path: String, arguments: [String], environment: [String: String],
                                              keeping kept: Set<Int32>) throws -> Outcome {
        var pipeEnds: [Int32] = [-1, -1]
        guard pipe(&pipeEnds) == 0 else { throw SystemError("pipe", path: path, errno: errno) }
        let (readEnd, writeEnd) = (pipeEnds[0], pipeEnds[1])
        // Neither end goes to the child as itself (the write end only as its stdout).
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
        defer { _ = close(readEnd) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, STDOUT_FILENO)
        for descriptor in openDescriptors() where descriptor > STDERR_FILENO && !kept.contains(descriptor) && descriptor != writeEnd {
            posix_spawn_file_actions_addclose(&actions, descriptor)
        }

        // A daemon starts with no signal blocked (a parent's blocked mask is inherited
        // otherwise, and SIGTERM would never reach it).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))

        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        _ = close(writeEnd)
        guard result == 0 else { throw SystemError("posix_spawn", path: path, errno: result) }

        var line: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 256)
        while line.count < 4096 {
            let count = buffer.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            line += buffer[0..<count]
            if line.starts(with: Array("ready".utf8)) { return .ready }
            if line.contains(UInt8(ascii: "\n")) { break }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7f
        return .exited(signal == 0 ? (status >> 8) & 0xff : 128 + signal)
    }

    /// The descriptors open in this process (from /proc/self/fd).
    static func openDescriptors() -> [Int32] {
        guard let directory = opendir("/proc/self/fd") else { return [] }
        defer { closedir(directory) }
        let own = dirfd(directory)
        var descriptors: [Int32] = []
        while let entry = readdir(directory) {
            let name = DirectoryEntry.name(entry)
            if let descriptor = Int32(name), descriptor != own { descriptors.append(descriptor) }
        }
        return descriptors
    }
}
