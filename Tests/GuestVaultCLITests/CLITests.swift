import Foundation
import Testing

@Suite struct CLITests {
    @Test func versionAndHelp() throws {
        let version = try CLIRunner.run(["--version"])
        #expect(version.status == 0)
        #expect(version.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)
        let help = try CLIRunner.run(["--help"])
        #expect(help.status == 0)
        for verb in ["vault", "create", "inspect", "list", "put", "get", "rekey", "serve", "send", "receive", "import-swtpm", "export-swtpm", "benchmark", "demo"] {
            #expect(help.stdout.contains(verb), "--help lists \(verb)")
            let verbHelp = try CLIRunner.run(verb == "vault" ? ["vault", "init", "--help"] : [verb, "--help"])
            #expect(verbHelp.status == 0 && verbHelp.stdout.contains("USAGE"), "\(verb) --help")
        }
        let demoHelp = try CLIRunner.run(["demo", "--help"])
        #expect(demoHelp.status == 0 && demoHelp.stdout.contains("--size-mib"))
    }

    @Test func demoRunsAndReportsEachStep() throws {
        let result = try CLIRunner.run(["demo", "--size-mib", "2", "--json"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let steps = object?["steps"] as? [[String: Any]] ?? []
        let names = steps.compactMap { $0["step"] as? String }
        #expect(names == ["vaults", "container + vTPM", "TPM commands", "seal runtime state", "send to host B", "open on host B", "tamper check"])
        #expect(!result.stdout.contains("hunter"))
    }

    @Test func badArgumentsFailWithOneLine() throws {
        let result = try CLIRunner.run(["demo", "--size-mib", "0"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("--size-mib"))
        let unknown = try CLIRunner.run(["no-such-verb"])
        #expect(unknown.status != 0)
    }
}
