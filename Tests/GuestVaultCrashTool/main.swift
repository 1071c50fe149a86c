// guestvault-crash-tool: the crash-consistency tests' writer (docs/RELIABILITY.md). A
// test-only executable, not a product and not a verb of `guestvault`.
//
//   guestvault-crash-tool --vault DIR STATE [--size BYTES] [--count N]
//                         [--kill-at POINT [--kill-after N]]
//
// Commits entry "tpm.permanent" with content derived from the generation in a loop.
// Before each commit it prints `begin G` (G the generation being committed), and `G`
// once the commit returned. With `--kill-at POINT` the process SIGKILLs itself the Nth
// time (`--kill-after N`, counted from the first commit of this run) it reaches POINT
// (a CrashPoint), after printing `crash-point POINT N` to standard error.

import Foundation
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import Synchronization

struct Options {
    var vault = ""
    var state = ""
    var size = 8192
    var count = 1_000_000
    var killAt: CrashPoint?
    var killAfter = 1

    static func parse(_ arguments: [String]) throws -> Options {
        var options = Options()
        var rest = arguments[...]
        func value(_ flag: String) throws -> String {
            guard let next = rest.popFirst() else { throw UsageError("\(flag) needs a value") }
            return next
        }
        func number(_ flag: String) throws -> Int {
            let text = try value(flag)
            guard let n = Int(text), n >= 1 else { throw UsageError("\(flag) must be a number of 1 or more, not \(text)") }
            return n
        }
        while let argument = rest.popFirst() {
            switch argument {
            case "--vault": options.vault = try value(argument)
            case "--size": options.size = try number(argument)
            case "--count": options.count = try number(argument)
            case "--kill-after": options.killAfter = try number(argument)
            case "--kill-at":
                let name = try value(argument)
                guard let point = CrashPoint(rawValue: name) else {
                    throw UsageError("--kill-at \(name) is not a crash point (\(CrashPoint.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                options.killAt = point
            default:
                guard !argument.hasPrefix("-"), options.state.isEmpty else { throw UsageError("unexpected argument \(argument)") }
                options.state = argument
            }
        }
        guard !options.vault.isEmpty, !options.state.isEmpty else { throw UsageError("usage: guestvault-crash-tool --vault DIR STATE [--size N] [--count N] [--kill-at POINT [--kill-after N]]") }
        return options
    }
}

struct UsageError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// How often the chosen crash point was reached.
final class Arrivals: Sendable {
    let count = Atomic<Int>(0)
}

/// The content committed at each generation by the crash tests (the same formula as
/// Tests/GuestVaultStateTests/Child.swift).
func crashPattern(generation: UInt64, size: Int) -> [UInt8] {
    (0..<size).map { UInt8(truncatingIfNeeded: UInt64($0) &* 2654435761 &+ generation &* 40503) }
}

func run(_ options: Options) throws {
    let container = try GuestStateContainer.open(at: options.state, access: .readWrite)
    try container.unlock(with: UnlockCredentials(vault: KeyVault.open(at: options.vault)))
    if let point = options.killAt {
        // Armed after the unlock, so that only this run's commits count.
        let target = options.killAfter
        let arrivals = Arrivals()
        CrashPoint.setHook { reached in
            guard reached == point else { return }
            let n = arrivals.count.add(1, ordering: .relaxed).newValue
            guard n == target else { return }
            FileHandle.standardError.write(Data("crash-point \(point.rawValue) \(n)\n".utf8))
            kill(getpid(), SIGKILL)
        }
    }
    for _ in 0..<options.count {
        let next = container.generation + 1
        FileHandle.standardOutput.write(Data("begin \(next)\n".utf8))
        try container.write("tpm.permanent", crashPattern(generation: next, size: options.size))
        let generation = try container.commit()
        FileHandle.standardOutput.write(Data("\(generation)\n".utf8))
    }
    try container.flush()
}

do {
    try run(Options.parse(Array(CommandLine.arguments.dropFirst())))
} catch let error as UsageError {
    FileHandle.standardError.write(Data("guestvault-crash-tool: \(error)\n".utf8))
    exit(2)
} catch {
    FileHandle.standardError.write(Data("guestvault-crash-tool: \(error)\n".utf8))
    exit(1)
}
