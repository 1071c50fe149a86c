import Foundation
import GuestVaultSystem
import Testing

/// Runs programs for the server tests: `guestvault` itself, tpm2-tools, openssl, qemu.
enum Run {
    struct Output {
        let status: Int32
        let stdout: Data
        let stderr: String
        var text: String { String(decoding: stdout, as: UTF8.self) }
    }

    @discardableResult
    static func program(_ path: String, _ arguments: [String], environment: [String: String] = [:], input: Data? = nil,
                        timeout: TimeInterval = 60) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe(), inPipe = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = inPipe
        try process.run()
        if let input { inPipe.fileHandleForWriting.write(input) }
        try? inPipe.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(timeout)
        let group = DispatchGroup()
        nonisolated(unsafe) var outData = Data()
        group.enter()
        DispatchQueue.global().async { outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { process.terminate(); kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        group.wait()
        return Output(status: process.terminationStatus, stdout: outData, stderr: String(decoding: errData, as: UTF8.self))
    }

    static func guestvault(_ arguments: [String]) throws -> Output {
        try program(GuestVaultBinary.path, arguments)
    }

    static func which(_ name: String) -> String? {
        for dir in ["/usr/bin", "/usr/sbin", "/bin", "/usr/local/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        return nil
    }
}

/// A `guestvault serve` child process on loopback TCP ports P (data) and P+1 (control).
final class ServedTPM {
    let process = Process()
    let port: UInt16
    let stderrPipe = Pipe()

    /// `launcher` runs before the binary (`prlimit --nofile=...`); `logFile` takes the
    /// debug log instead of standard error; `extraArguments` go after the others.
    init(vault: String, state: String, flags: String = "not-need-init,startup-clear", launcher: [String] = [],
         logFile: String? = nil, extraArguments: [String] = []) throws {
        port = freeLoopbackPortPair()
        let logging = logFile.map { ["--log-level", "debug", "--log-file", $0] } ?? ["--verbose"]
        let arguments = ["serve", "--vault", vault, state, "--server", "tcp:127.0.0.1:\(port)",
                         "--ctrl", "tcp:127.0.0.1:\(port + 1)", "--flags", flags] + logging + extraArguments
        if let program = launcher.first {
            process.executableURL = URL(fileURLWithPath: program)
            process.arguments = Array(launcher.dropFirst()) + [GuestVaultBinary.path] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: GuestVaultBinary.path)
            process.arguments = arguments
        }
        process.standardError = stderrPipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // Ready when the control port accepts.
        if waitUntilAccepting(port: port + 1, while: process) { return }
        throw ServerError(message: "guestvault serve did not come up: \(String(decoding: stderrPipe.fileHandleForReading.availableData, as: UTF8.self))")
    }

    struct ServerError: Error, CustomStringConvertible { let message: String; var description: String { message } }

    var tcti: [String: String] { ["TPM2TOOLS_TCTI": "swtpm:host=127.0.0.1,port=\(port)"] }
    var pid: Int32 { process.processIdentifier }
    var controlAddress: StreamSocket.Address { .tcp(host: "127.0.0.1", port: port + 1) }
    var dataAddress: StreamSocket.Address { .tcp(host: "127.0.0.1", port: port) }

    /// SIGTERM; returns the exit status.
    func terminate() -> Int32 {
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(20)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
}

enum Peers {
    static let tpm2Tools = Run.which("tpm2_getrandom") != nil
    static let openssl = Run.which("openssl") != nil
    static let qemu = Run.which("qemu-system-x86_64") != nil && FileManager.default.fileExists(atPath: "/usr/share/seabios/bios-256k.bin")
}
