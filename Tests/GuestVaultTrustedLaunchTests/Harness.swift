@_exported import GuestVaultTestSupport
import Foundation
import GuestVaultSystem

/// Runs programs for the trusted-launch tests: `guestvault`, tpm2-tools, QEMU.
enum Run {
    struct Output {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs a program to its end, killing it after `timeout` seconds (see ``runChild``).
    @discardableResult
    static func program(_ path: String, _ arguments: [String], environment: [String: String] = [:], timeout: TimeInterval = 120) throws -> Output {
        let result = try runChild(path, arguments, environment: environment, timeout: timeout)
        return Output(status: result.status, stdout: String(decoding: result.output, as: UTF8.self), stderr: result.errors)
    }

    static func guestvault(_ arguments: [String]) throws -> Output { try program(GuestVaultBinary.path, arguments) }

    static func which(_ name: String) -> String? {
        ["/usr/bin", "/usr/sbin", "/bin"].map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

enum Peers {
    static let tpm2Tools = Run.which("tpm2_pcrextend") != nil
    static let qemu = Run.which("qemu-system-x86_64") != nil
    static let ovmf = FileManager.default.fileExists(atPath: "/usr/share/OVMF/OVMF_CODE_4M.ms.fd")
        && FileManager.default.fileExists(atPath: "/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
        && FileManager.default.fileExists(atPath: "/usr/share/OVMF/OVMF_VARS_4M.fd")
}

/// A child process, killed on deinit.
final class Child {
    let process = Process()
    let log: String

    init(_ path: String, _ arguments: [String], log: String) throws {
        self.log = log
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var text: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
    var isRunning: Bool { process.isRunning }

    /// Sends `signal` and waits for the exit; returns the status.
    @discardableResult
    func stop(_ signal: Int32 = SIGTERM) -> Int32 {
        if process.isRunning { kill(process.processIdentifier, signal) }
        let deadline = Date().addingTimeInterval(60)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
}

/// Waits up to `seconds` for `condition` (a deadline for a boot, not a timed assertion).
@discardableResult
func waitFor(seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(100_000)
    }
    return condition()
}

/// A directory on tmpfs (/dev/shm) for the plaintext VARS file, removed on deinit.
final class MemoryDirectory {
    let path = "/dev/shm/gv-trusted-\(UUID().uuidString.prefix(8))"
    init() { _ = try? FileSystem.createDirectory(path) }
    func file(_ name: String) -> String { "\(path)/\(name)" }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// A vault and a container with a TPM (and `--uefi` options) in a temporary directory.
struct TestVM {
    let dir = TemporaryDirectory("trusted")
    let vault: String
    let state: String
    let vm = UUID().uuidString.lowercased()

    init(_ createOptions: [String] = []) throws {
        vault = dir.file("vault")
        state = dir.file("vm.state")
        let initialised = try Run.guestvault(["vault", "init", "--vault", vault])
        precondition(initialised.status == 0, initialised.stderr)
        let created = try Run.guestvault(["create", "--vault", vault, "--vm", vm, "--tpm"] + createOptions + [state])
        precondition(created.status == 0, created.stderr)
    }

    /// `guestvault get` of an entry.
    func entry(_ name: String) throws -> Data? {
        let out = dir.file("entry-\(UUID().uuidString.prefix(6))")
        let result = try Run.guestvault(["get", "--vault", vault, state, name, out])
        defer { try? FileManager.default.removeItem(atPath: out) }
        return result.status == 0 ? FileManager.default.contents(atPath: out) : nil
    }
}
