import Foundation
import GuestVaultTestSupport
import Testing

/// `guestvault uefi list|show` through the built binary, on the real templates and on a
/// container that holds one.
@Suite(.enabled(if: OVMF.available, OVMF.skipReason))
struct UEFICLITests {
    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs the built `guestvault` with no vault in its environment (an empty
    /// GUESTVAULT_VAULT counts as none).
    func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let result = try runChild(GuestVaultBinary.path, arguments, environment: ["GUESTVAULT_VAULT": ""].merging(environment) { $1 })
        return Result(status: result.status, stdout: String(decoding: result.output, as: UTF8.self), stderr: result.errors)
    }

    static let microsoftPath = "\(OVMF.directory)/OVMF_VARS_4M.ms.fd"

    @Test func showPrintsTheSecureBootSummary() throws {
        let result = try run(["uefi", "show", Self.microsoftPath])
        #expect(result.status == 0, "\(result.stderr)")
        for text in ["Microsoft Corporation KEK CA 2011", "Microsoft Windows Production PCA 2011",
                     "Microsoft Corporation UEFI CA 2011", "1 sha256 hash", "SetupMode           0"] {
            #expect(result.stdout.contains(text), "show prints \(text)")
        }
        let blank = try run(["uefi", "show", "\(OVMF.directory)/OVMF_VARS_4M.fd"])
        #expect(blank.status == 0)
        #expect(blank.stdout.contains("PK                  not enrolled"))
        #expect(blank.stdout.contains("SetupMode           1 (enabled)"))
    }

    @Test func showJSON() throws {
        let result = try run(["uefi", "show", "--json", Self.microsoftPath])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let secureBoot = try #require(object["secureBoot"] as? [String: Any])
        let kek = try #require(secureBoot["kek"] as? [String: Any])
        let subjects = (kek["certificates"] as? [[String: Any]] ?? []).compactMap { $0["subject"] as? String }
        #expect(subjects.contains { $0.contains("Microsoft Corporation KEK CA 2011") })
        let dbx = try #require(secureBoot["dbx"] as? [String: Any])
        #expect((dbx["hashCounts"] as? [String: Int])?["sha256"] == 1)
        #expect(((secureBoot["setupMode"] as? [String: Any])?["enabled"] as? Bool) == false)
        #expect((object["variables"] as? [Any])?.count == 31)
    }

    @Test func listShowsDeletedOnlyWithAll() throws {
        let live = try run(["uefi", "list", "--json", Self.microsoftPath])
        let all = try run(["uefi", "list", "--json", "--all", Self.microsoftPath])
        #expect(live.status == 0 && all.status == 0)
        func names(_ result: Result) throws -> [String] {
            let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            return (object?["variables"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        }
        #expect(try names(live).count == 31)
        #expect(try names(all).count == 57)
        #expect(try !names(live).contains("BootOrder"))
        #expect(try names(all).contains("BootOrder"))
        let text = try run(["uefi", "list", "--all", Self.microsoftPath])
        #expect(text.stdout.contains("deleted (0x3c)"))
    }

    @Test func containerEntry() throws {
        let directory = TemporaryDirectory("uefi-cli")
        let vault = directory.file("vault"), state = directory.file("vm.state")
        #expect(try run(["vault", "init", "--vault", vault]).status == 0)
        let created = try run(["create", "--vault", vault, "--vm", UUID().uuidString, state])
        #expect(created.status == 0, "\(created.stderr)")
        // No entry yet: a clear error that says how to add one.
        let missing = try run(["uefi", "show", "--vault", vault, state])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("uefi.vars"))
        #expect(missing.stderr.split(separator: "\n").count == 1, "one line: \(missing.stderr)")
        let put = try run(["put", "--vault", vault, state, "uefi.vars", Self.microsoftPath])
        #expect(put.status == 0, "\(put.stderr)")
        let shown = try run(["uefi", "show", "--vault", vault, state])
        #expect(shown.status == 0, "\(shown.stderr)")
        #expect(shown.stdout.contains("\(state) entry uefi.vars"))
        #expect(shown.stdout.contains("Microsoft Corporation UEFI CA 2011"))
        // Without the vault the container cannot be opened.
        let locked = try run(["uefi", "show", state])
        #expect(locked.status != 0)
    }

    @Test func hostileFileFailsWithOneLine() throws {
        let directory = TemporaryDirectory("uefi-cli")
        var bytes = try OVMF.microsoft
        bytes[0x545c + 40] = 0xFF   // PK's DataSize
        bytes[0x545c + 41] = 0xFF
        bytes[0x545c + 42] = 0xFF
        bytes[0x545c + 43] = 0x7F
        let path = directory.file("bad.fd")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        for verb in ["list", "show"] {
            let result = try run(["uefi", verb, path])
            #expect(result.status != 0 && result.status < 128)
            #expect(result.stderr.split(separator: "\n").count == 1, "one line: \(result.stderr)")
            #expect(result.stderr.contains("DataSize") && result.stderr.contains("0x54"), "\(result.stderr)")
        }
        // --raw on something that is not a volume.
        let notVolume = directory.file("zero.fd")
        try Data(count: 4096).write(to: URL(fileURLWithPath: notVolume))
        let raw = try run(["uefi", "list", "--raw", notVolume])
        #expect(raw.status != 0 && raw.stderr.contains("_FVH"))
    }

    @Test func helpTeaches() throws {
        let help = try run(["uefi", "--help"])
        #expect(help.status == 0 && help.stdout.contains("list") && help.stdout.contains("show"))
        let show = try run(["uefi", "show", "--help"])
        #expect(show.status == 0 && show.stdout.contains("--json") && show.stdout.contains("--raw") && show.stdout.contains("Examples"))
    }
}
