import ArgumentParser
import GuestVaultTestSupport
import GuestVaultVM
import Testing

/// `serve`'s quick parser (ServeSettings.quickParse) next to ArgumentParser's: whatever
/// the quick one accepts, ArgumentParser reads as the same settings; what it does not
/// accept is left to ArgumentParser (and its messages).
@Suite("serve's command line without ArgumentParser")
struct ServeArgumentsTests {
    /// ArgumentParser's reading, nil when it refuses the line.
    static func viaArgumentParser(_ arguments: [String]) -> ServeSettings? {
        (try? Serve.parse(arguments))?.settings
    }

    @Test func theCommandLinesOfTheDocsAndTheBenchmarkTakeTheQuickPath() throws {
        let lines: [[String]] = [
            ["--vault", "/var/lib/guestvault/vault", "vm1.state", "--ctrl", "unix:/run/vm1-tpm.sock"],
            ["--vault", "DIR", "vm1.state", "--server", "tcp:127.0.0.1:2321", "--ctrl", "tcp:127.0.0.1:2322", "--flags", "not-need-init,startup-clear"],
            ["--vault=DIR", "vm.state", "--ctrl=unix:/tmp/c", "--uefi-vars", "/run/guestvault/vm_VARS.fd", "--host-socket", "/run/h.sock",
             "--check-policy", "--policy-settle", "2000", "--log-level", "info", "--log-file", "/var/log/vm.log"],
            ["vm.state", "--ctrl", "unix:/tmp/c", "--migration-key", "pwdfd=3,mode=aes-256-cbc", "--migration", "incoming,release-lock-outgoing",
             "--max-control-connections", "2", "--request-timeout", "100", "--write-timeout", "200", "--allow-rollback", "--verbose"],
        ]
        for line in lines {
            let quick = try #require(ServeSettings.quickParse(line), "\(line)")
            #expect(quick == Self.viaArgumentParser(line), "\(line)")
        }
    }

    @Test func linesTheQuickParserLeavesToArgumentParser() {
        let lines: [[String]] = [
            [], ["--help"], ["-h"], ["vm.state"], ["--ctrl", "unix:/c"], ["vm.state", "--ctrl"], ["vm.state", "--ctrl", "--vault"],
            ["vm.state", "--ctrl", "unix:/c", "other.state"], ["vm.state", "--ctrl", "unix:/c", "--no-such-option"],
            ["vm.state", "--ctrl", "unix:/c", "--uefi-poll", "soon"], ["vm.state", "--ctrl", "unix:/c", "--request-timeout", "99999999999"],
            ["vm.state", "--ctrl", "unix:/c", "--verbose=yes"], ["vm.state", "--ctrl", "unix:/c", "--"], ["-x", "--ctrl", "unix:/c"],
        ]
        for line in lines {
            #expect(ServeSettings.quickParse(line) == nil, "\(line)")
        }
    }

    /// Random lines from serve's options, valid and not: the quick parser agrees with
    /// ArgumentParser on every line it accepts, and accepts most valid ones.
    @Test func randomLinesAgreeWithArgumentParser() {
        var generator = SplitMix64(state: 0x5e12_7e00)
        let stringOptions = ["vault", "passphrase-file", "recovery-key", "recovery-passphrase-file", "server", "ctrl", "flags", "log-level",
                             "log-file", "migration-key", "migration", "uefi-vars", "host-socket"]
        let numberOptions = ["cluster-wait", "max-control-connections", "request-timeout", "write-timeout", "uefi-poll", "policy-settle"]
        let flags = ["allow-rollback", "verbose", "allow-plaintext-migration", "check-policy"]
        let values = ["unix:/run/x.sock", "tcp:127.0.0.1:2321", "a b", "", "=", "x=y", "-", "-5", "+7", "0", "12", "2147483648", "ten", "ä"]
        var accepted = 0, agreedRefusals = 0
        for _ in 0..<2_000 {
            var line: [String] = []
            for _ in 0..<Int.random(in: 0...7, using: &generator) {
                switch Int.random(in: 0..<10, using: &generator) {
                case 0..<4:
                    let name = stringOptions.randomElement(using: &generator)!
                    let value = values.randomElement(using: &generator)!
                    line += Bool.random(using: &generator) ? ["--\(name)", value] : ["--\(name)=\(value)"]
                case 4..<6:
                    let name = numberOptions.randomElement(using: &generator)!
                    let value = values.randomElement(using: &generator)!
                    line += Bool.random(using: &generator) ? ["--\(name)", value] : ["--\(name)=\(value)"]
                case 6..<8: line.append("--" + flags.randomElement(using: &generator)!)
                case 8: line.append(["vm.state", "other.state", "--", "-v", "--nope"].randomElement(using: &generator)!)
                default: line.append(values.randomElement(using: &generator)!)
                }
            }
            if Bool.random(using: &generator) { line += ["--ctrl", "unix:/run/c.sock"] }
            if Bool.random(using: &generator) { line.insert("vm.state", at: Int.random(in: 0...line.count, using: &generator)) }
            let quick = ServeSettings.quickParse(line)
            let parsed = Self.viaArgumentParser(line)
            if let quick {
                accepted += 1
                #expect(quick == parsed, "\(line)")
            } else if parsed == nil {
                agreedRefusals += 1
            }
        }
        #expect(accepted > 200, "the quick parser takes the ordinary lines: \(accepted) of 2,000")
        #expect(agreedRefusals > 200)
    }
}
