import Foundation
import GuestVaultCore
import Testing

/// `serve` is parsed alone when its arguments parse (a faster start); whatever does not
/// parse still takes the full parser's path with its messages and exit codes.
@Suite struct ServeParsingTests {
    @Test func serveHelpNamesTheTool() throws {
        let result = try CLIRunner.run(["serve", "--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("guestvault serve"), "\(result.stdout)")
    }

    @Test func serveUsageErrorsKeepTheirMessage() throws {
        let missing = try CLIRunner.run(["serve", "--vault", "/nonexistent-vault"])
        #expect(missing.status == ErrorCategory.usage.exitCode, "\(missing.stderr)")
        #expect(missing.stderr.hasPrefix("guestvault: "), "\(missing.stderr)")
        let unknown = try CLIRunner.run(["serve", "--no-such-option", "x.state", "--ctrl", "unix:/tmp/x"])
        #expect(unknown.status == ErrorCategory.usage.exitCode, "\(unknown.stderr)")
        #expect(unknown.stderr.contains("--no-such-option"), "\(unknown.stderr)")
    }

    /// Arguments that parse but fail validation (here an unknown flag) are reported as
    /// usage errors whichever path parsed them.
    @Test func serveValidationIsUsage() throws {
        let result = try CLIRunner.run(["serve", "--vault", "/nonexistent-vault", "x.state", "--ctrl", "unix:/tmp/gv-x.sock", "--flags", "bogus"])
        #expect(result.status == ErrorCategory.usage.exitCode, "\(result.stderr)")
        #expect(result.stderr.contains("bogus"), "\(result.stderr)")
    }
}
