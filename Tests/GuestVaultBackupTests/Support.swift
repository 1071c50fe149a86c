import Foundation
import GuestVaultSystem
@_exported import GuestVaultTestSupport
import Testing

/// Runs `guestvault` and the tpm2-tools for these tests.
enum Tool {
    struct Output {
        let status: Int32
        let stdout: Data
        let stderr: String
        var text: String { String(decoding: stdout, as: UTF8.self) }
    }

    @discardableResult
    static func program(_ path: String, _ arguments: [String], environment: [String: String] = [:], input: Data? = nil) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["GUESTVAULT_VAULT"] = nil
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let out = Pipe(), err = Pipe(), inPipe = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = inPipe
        try process.run()
        if let input { inPipe.fileHandleForWriting.write(input) }
        try? inPipe.fileHandleForWriting.close()
        let group = DispatchGroup()
        nonisolated(unsafe) var outData = Data()
        group.enter()
        DispatchQueue.global().async { outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        group.wait()
        return Output(status: process.terminationStatus, stdout: outData, stderr: String(decoding: errData, as: UTF8.self))
    }

    @discardableResult
    static func guestvault(_ arguments: [String], input: Data? = nil) throws -> Output {
        try program(GuestVaultBinary.path, arguments, input: input)
    }

    /// Runs `guestvault` and expects success.
    @discardableResult
    static func ok(_ arguments: [String], input: Data? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws -> Output {
        let output = try guestvault(arguments, input: input)
        #expect(output.status == 0, "guestvault \(arguments.joined(separator: " ")): \(output.stderr)", sourceLocation: sourceLocation)
        return output
    }

    static func which(_ name: String) -> String? {
        ["/usr/bin", "/usr/sbin", "/bin", "/usr/local/bin"].map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static let hasTPM2Tools = which("tpm2_nvread") != nil && which("swtpm_ioctl") != nil

    /// The CLI's exit code for the "rollback" category (README's table).
    static let rollbackExit: Int32 = {
        let text = (try? guestvault(["--help"]).text) ?? ""
        for line in text.split(separator: "\n") where line.hasSuffix(" rollback") {
            if let code = Int32(line.split(separator: " ").first ?? "") { return code }
        }
        return -1
    }()
}

/// A `guestvault serve` child on loopback TCP ports P (data) and P+1 (control), for
/// tpm2-tools through tpm2-tss' swtpm TCTI.
final class ServedTPM {
    let process = Process()
    let port: UInt16
    let stderrPipe = Pipe()

    init(_ arguments: [String], state: String) throws {
        port = freeLoopbackPortPair()
        process.executableURL = GuestVaultBinary.url
        process.arguments = ["serve"] + arguments + [state, "--server", "tcp:127.0.0.1:\(port)", "--ctrl", "tcp:127.0.0.1:\(port + 1)",
                                                     "--flags", "not-need-init,startup-clear"]
        process.standardError = stderrPipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        if waitUntilAccepting(port: port + 1, while: process) { return }
        throw Failure(message: "guestvault serve did not come up: \(String(decoding: stderrPipe.fileHandleForReading.availableData, as: UTF8.self))")
    }

    struct Failure: Error, CustomStringConvertible { let message: String; var description: String { message } }

    var tcti: [String: String] { ["TPM2TOOLS_TCTI": "swtpm:host=127.0.0.1,port=\(port)"] }

    /// Runs a tpm2-tools program against this server and expects success.
    @discardableResult
    func tool(_ name: String, _ arguments: [String], input: Data? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws -> Tool.Output {
        let output = try Tool.program(Tool.which(name) ?? name, arguments, environment: tcti, input: input)
        #expect(output.status == 0, "\(name) \(arguments.joined(separator: " ")): \(output.stderr)", sourceLocation: sourceLocation)
        return output
    }

    /// CMD_SHUTDOWN on the control channel, as QEMU sends it (`swtpm_ioctl -s`): the
    /// volatile state is stored and the server exits; returns the exit status. (Not
    /// SIGTERM: a child spawned from a test thread inherits that thread's signal mask.)
    /// Should the server not exit, it is killed after a minute so the run cannot hang;
    /// the status then says so.
    @discardableResult
    func stop() -> Int32 {
        let ioctl = Tool.which("swtpm_ioctl") ?? "swtpm_ioctl"
        _ = try? Tool.program(ioctl, ["--tcp", "127.0.0.1:\(port + 1)", "-s"])
        for _ in 0..<3000 where process.isRunning { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
}

/// Writes `text` to a 0600 file.
func writeSecret(_ text: String, to path: String) throws {
    try FileSystem.writeAtomically(Array(text.utf8), to: path, mode: 0o600)
}
