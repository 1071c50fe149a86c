public import Foundation

/// What a finished child gave: its exit status, its output as bytes, its errors as text,
/// and whether it was killed at its deadline.
public struct ProcessResult: Sendable {
    public let status: Int32
    public let output: Data
    public let errors: String
    public let timedOut: Bool
}

/// Runs a program and returns what it gave (both pipes read to the end before waiting,
/// so a chatty child cannot block). With a `timeout` (seconds) the child is killed with
/// SIGKILL once it has run that long.
public func runChild(_ path: String, _ arguments: [String], environment: [String: String] = [:],
                     timeout: TimeInterval? = nil) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (key, value) in environment { env[key] = value }
    process.environment = env
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let group = DispatchGroup()
    nonisolated(unsafe) var outData = Data()
    group.enter()
    DispatchQueue.global().async { outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    var timedOut = false
    if let timeout {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        timedOut = process.isRunning
        if timedOut { kill(process.processIdentifier, SIGKILL) }
    }
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    return ProcessResult(status: process.terminationStatus, output: outData,
                         errors: String(decoding: errData, as: UTF8.self), timedOut: timedOut)
}

/// ``runChild(_:_:environment:timeout:)`` with its output as text.
public func runProcess(_ path: String, _ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
    let result = try runChild(path, arguments, environment: environment)
    return (result.status, String(decoding: result.output, as: UTF8.self), result.errors)
}
