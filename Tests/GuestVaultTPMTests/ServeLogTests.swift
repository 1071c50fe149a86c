import Foundation
import GuestVaultCore
import GuestVaultSystem
import GuestVaultTPM
import Testing

/// `guestvault serve --log-file`: one line per record with the VM id, a new file 0600, and
/// a path another user planted a symlink at is refused (the file it points to stays as it was).
@Suite struct ServeLogTests {
    @Test func theLogFileIsPrivateAndEveryLineNamesTheVM() throws {
        let dir = TemporaryDirectory("serve-log")
        let id = UUID()
        let vm = id.uuidString.lowercased()
        let (vault, state) = try ServerLimitsTests.makeTPM(dir, vm: id)
        let log = dir.file("serve.log")
        let server = try ServedTPM(vault: vault, state: state, logFile: log)
        let control = try StreamSocket.connect(server.controlAddress)
        _ = try ServerLimitsTests.control(.getCapability, on: control)
        #expect(server.terminate() == 0)
        #expect(mode(of: log) == 0o600)
        let lines = ServerLimitsTests.log(log).split(separator: "\n")
        #expect(lines.count >= 2, "\(lines)")
        for line in lines { #expect(line.contains("vm=\(vm)"), "\(line)") }
        #expect(lines.contains { $0.contains("debug: control: CMD_GET_CAPABILITY") })
    }

    @Test(.enabled(if: OtherUser.isAvailable, "needs root and setpriv"))
    func aLogPathThatIsAnotherUsersSymlinkIsRefused() throws {
        let dir = TemporaryDirectory("serve-log-symlink")
        let (vault, state) = try ServerLimitsTests.makeTPM(dir)
        let victim = dir.file("victim")
        try Data("keep".utf8).write(to: URL(fileURLWithPath: victim))
        let attacker = try OtherUser.directory()
        defer { try? FileManager.default.removeItem(atPath: attacker) }
        try OtherUser.symlink(victim, at: "\(attacker)/serve.log")
        let served = try Run.program(GuestVaultBinary.path, ["serve", "--vault", vault, state, "--ctrl", "tcp:127.0.0.1:0",
                                                             "--log-file", "\(attacker)/serve.log"], timeout: 30)
        #expect(served.status != 0)
        #expect(served.stderr.contains("symlink") || served.stderr.contains("serve.log"), "\(served.stderr)")
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "keep")
    }
}
