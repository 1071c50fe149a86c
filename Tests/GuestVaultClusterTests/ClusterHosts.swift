import Foundation
import Glibc
import GuestVaultSystem
import GuestVaultTestSupport

/// Runs a program to its end and returns its status and output (stdout, stderr).
@discardableResult
func runProgram(_ path: String, _ arguments: [String], environment: [String: String] = [:], input: Data? = nil) throws
    -> (status: Int32, stdout: Data, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let out = Pipe(), err = Pipe(), inPipe = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = inPipe
    try process.run()
    if let input { inPipe.fileHandleForWriting.write(input) }
    try? inPipe.fileHandleForWriting.close()
    let outData = LockedData()
    let reader = Thread { outData.set(out.fileHandleForReading.readDataToEndOfFile()) }
    reader.start()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    while !outData.done { usleep(1000) }
    return (process.terminationStatus, outData.value, String(decoding: errData, as: UTF8.self))
}

final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private var finished = false
    func set(_ value: Data) { lock.withLock { data = value; finished = true } }
    var done: Bool { lock.withLock { finished } }
    var value: Data { lock.withLock { data } }
}

func guestvault(_ arguments: [String]) throws -> (status: Int32, stdout: Data, stderr: String) {
    try runProgram(GuestVaultBinary.path, arguments)
}

func tool(_ name: String) -> String? {
    ["/usr/bin", "/usr/sbin", "/bin"].map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// One "host" of the failover tests: a vault of its own, joined to the cluster, and at
/// most one `guestvault serve` child on loopback ports P (data) and P+1 (control).
final class ClusterHost: @unchecked Sendable {
    let name: String
    let vault: String
    private(set) var serve: Process?
    private(set) var port: UInt16 = 0
    private let stderrFile: String

    init(name: String, directory: String) {
        self.name = name
        vault = "\(directory)/vault-\(name)"
        stderrFile = "\(directory)/serve-\(name).log"
    }

    var tcti: [String: String] { ["TPM2TOOLS_TCTI": "swtpm:host=127.0.0.1,port=\(port)"] }

    /// Starts `serve` for the shared container; returns when its control port accepts
    /// (false when the process ended first, or after `attempts` × 50 ms).
    @discardableResult
    func startServe(_ shared: String, wait: Int?, attempts: Int = 1200) throws -> Bool {
        port = try Self.portPair()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: GuestVaultBinary.path)
        process.arguments = ["serve", "--vault", vault, shared, "--server", "tcp:127.0.0.1:\(port)", "--ctrl", "tcp:127.0.0.1:\(port + 1)",
                             "--flags", "not-need-init,startup-clear", "--verbose"] + (wait.map { ["--cluster-wait", "\($0)"] } ?? [])
        _ = FileManager.default.createFile(atPath: stderrFile, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: stderrFile)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        serve = process
        let port = self.port
        return waitUntil(attempts: attempts, interval: 50_000) {
            !process.isRunning || (try? StreamSocket.connect(.tcp(host: "127.0.0.1", port: port + 1))) != nil
        } && process.isRunning
    }

    var log: String { (try? String(contentsOfFile: stderrFile, encoding: .utf8)) ?? "" }

    func signal(_ number: Int32) { if let serve { kill(serve.processIdentifier, number) } }

    /// SIGKILL and reap.
    func killServe() {
        guard let serve else { return }
        if serve.isRunning { kill(serve.processIdentifier, SIGKILL) }
        kill(serve.processIdentifier, SIGCONT)
        serve.waitUntilExit()
        self.serve = nil
    }

    deinit { killServe() }

    /// Two free consecutive ports.
    static func portPair() throws -> UInt16 {
        let port = freeLoopbackPortPair()
        guard port != 0 else { throw EtcdClusterError.noFreePort }
        return port
    }
}
