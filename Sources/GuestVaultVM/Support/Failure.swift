public import ArgumentParser
import FoundationEssentials
import Glibc
public import GuestVaultCore
import GuestVaultSystem

extension ErrorCode {
    /// A CLI-level check failed (a demo step, a comparison after a round trip).
    public static let checkFailed = ErrorCode("checkFailed", .integrity)
    /// The command line names something that does not fit together.
    public static let badArguments = ErrorCode("badArguments", .usage)
    /// A 32-bit KEK epoch cannot go higher.
    public static let epochExhausted = ErrorCode("epochExhausted", .limit)
}

/// An error the CLI itself raises (not a library's), in the one error shape.
public struct CLIError: GuestVaultError {
    public let code: ErrorCode
    public let message: String
    public let underlying: (any Error & Sendable)?
    public let location: SourceLocation

    public init(_ code: ErrorCode, _ message: String, underlying: (any Error & Sendable)? = nil, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.underlying = underlying
        self.location = SourceLocation(file: file, line: line)
    }
}

/// The one place where the tool turns an error into what the user sees: one line on
/// standard error, `guestvault: <message>`, printable characters only, and an exit code
/// that depends only on the error's category (README, `guestvault --help`), always
/// below 128.
public enum Failure {
    /// Exit code of a usage error (a bad flag, a missing argument, an invalid value).
    public static let usageExitCode = ErrorCategory.usage.exitCode

    /// Reports `error` and exits.
    public static func exit(_ error: any Error) -> Never {
        let (line, code) = describe(error)
        report(line)
        Glibc.exit(code)
    }

    /// Reports a command-line parsing or validation error (ArgumentParser's) and exits 2;
    /// `command` is the command whose arguments were parsed.
    public static func exitUsage(_ error: any Error, command: any ParsableCommand.Type) -> Never {
        var text = command.message(for: error)
        if text.isEmpty { text = String(describing: error) }
        report(text)
        Glibc.exit(usageExitCode)
    }

    /// Ends the process after a verb (`command`'s, or one of its subcommands) threw
    /// `error`: a library's error by its category; an exit code the verb chose; help or
    /// version that ArgumentParser found while running (printed, exit 0); a usage error
    /// found while running (exit 2); anything else as a failure.
    public static func exitAfterVerb(_ error: any Error, command: any ParsableCommand.Type) -> Never {
        if error is any GuestVaultError { exit(error) }
        if let code = error as? ExitCode {
            // A verb that chose its exit status has already said what it wanted to.
            Glibc.exit(code.rawValue == 0 ? 0 : min(max(code.rawValue, 1), 127))
        }
        if command.exitCode(for: error) == .success {
            let text = command.fullMessage(for: error)
            if !text.isEmpty { print(text) }
            Glibc.exit(0)
        }
        if error is ValidationError || String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") {
            exitUsage(error, command: command)
        }
        exit(error)
    }

    /// The line and exit code for `error`.
    public static func describe(_ error: any Error) -> (String, Int32) {
        if let validation = error as? ValidationError {
            return (validation.message, usageExitCode)
        }
        if let exit = error as? ExitCode {
            return ("exit \(exit.rawValue)", min(max(exit.rawValue, 1), 127))
        }
        if error is any GuestVaultError {
            return (ErrorChain.message(of: error), ErrorChain.category(of: error).exitCode)
        }
        // Any other error: its own description. (The CLI first turns a Foundation error
        // that no module wrapped into its short text, ForeignErrors in the CLI; this module
        // links only FoundationEssentials, which has no localized descriptions.)
        return (String(describing: error), ErrorCategory.failure.exitCode)
    }

    /// Writes `guestvault: <text>` as one line of printable characters.
    public static func report(_ text: String) {
        var cleaned = sanitized(text)
        for prefix in ["Error: ", "error: "] where cleaned.hasPrefix(prefix) { cleaned.removeFirst(prefix.count) }
        Descriptors.write("guestvault: \(cleaned)\n", to: 2)
    }

    /// `text` on one line: newlines and tabs become spaces, other control characters
    /// (and escape sequences a terminal would act on) become `?`, runs of spaces collapse.
    public static func sanitized(_ text: String) -> String {
        var out = ""
        var lastWasSpace = false
        for scalar in text.unicodeScalars {
            let value = scalar.value
            let isSpace = scalar == " " || scalar == "\n" || scalar == "\r" || scalar == "\t"
            if isSpace {
                if !lastWasSpace && !out.isEmpty { out.append(" ") }
                lastWasSpace = true
                continue
            }
            lastWasSpace = false
            if value < 0x20 || value == 0x7f || (0x80..<0xa0).contains(value) || scalar.properties.generalCategory == .format {
                out.append("?")
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        while out.hasSuffix(" ") { out.removeLast() }
        return out.isEmpty ? "failed" : out
    }
}
