import Foundation
import GuestVaultSystem
import Testing

/// serve's host channel: PCRs read between the guest's commands (here tpm2-tools plays
/// the guest), the golden policy recorded through it, checked while running and after
/// stop, with exit code 15 and the changed PCR named.
@Suite(.enabled(if: Peers.tpm2Tools, "needs tpm2-tools (apt install tpm2-tools)"))
struct HostChannelTests {
    static func pcr(_ index: Int, tcti: [String: String]) throws -> String {
        let read = try Run.program(Run.which("tpm2_pcrread")!, ["sha256:\(index)"], environment: tcti)
        let line = read.stdout.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("\(index) :") } ?? ""
        return String(line.split(separator: "0x").last ?? "").lowercased().trimmingCharacters(in: .whitespaces)
    }

    static func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    @Test func pcrsAndThePolicyThroughTheHostChannelAndFromTheStoppedContainer() throws {
        let vm = try TestVM()
        let port = freeLoopbackPortPair()
        let host = vm.dir.file("host.sock")
        let serve = try Child(GuestVaultBinary.path, [
            "serve", "--vault", vm.vault, vm.state, "--server", "tcp:127.0.0.1:\(port)", "--ctrl", "tcp:127.0.0.1:\(port + 1)",
            "--flags", "not-need-init,startup-clear", "--host-socket", host, "--log-level", "info",
        ], log: vm.dir.file("serve.log"))
        #expect(waitFor(seconds: 30) { FileManager.default.fileExists(atPath: host) }, "\(serve.text)")
        #expect(mode(of: host) == 0o600, "the host channel is for this user only")
        let tcti = ["TPM2TOOLS_TCTI": "swtpm:host=127.0.0.1,port=\(port)"]
        let extend = { (byte: String) throws -> Void in
            let r = try Run.program(Run.which("tpm2_pcrextend")!, ["7:sha256=" + String(repeating: byte, count: 32)], environment: tcti)
            #expect(r.status == 0, "\(r.stderr)")
        }
        try extend("ab")

        let pcrs = try Run.guestvault(["pcrs", "--vault", vm.vault, vm.state, "--socket", host, "--pcrs", "0-7,16", "--json"])
        #expect(pcrs.status == 0, "\(pcrs.stderr)")
        let values = Self.json(pcrs.stdout)["pcrs"] as? [String: String] ?? [:]
        #expect(Set(values.keys) == Set((0...7).map(String.init) + ["16"]))
        #expect(values["7"] == (try Self.pcr(7, tcti: tcti)), "the host sees what the guest sees")
        #expect(values["0"] == String(repeating: "0", count: 64))

        let record = try Run.guestvault(["policy", "record", "--vault", vm.vault, vm.state, "--socket", host])
        #expect(record.status == 0, "\(record.stderr)")
        let pass = try Run.guestvault(["policy", "check", "--vault", vm.vault, vm.state, "--socket", host, "--json"])
        #expect(pass.status == 0 && Self.json(pass.stdout)["result"] as? String == "pass", "\(pass.stdout) \(pass.stderr)")

        try extend("cd")
        let fail = try Run.guestvault(["policy", "check", "--vault", vm.vault, vm.state, "--socket", host, "--json"])
        #expect(fail.status == 15, "a mismatch has its own exit code: \(fail.status) \(fail.stderr)")
        let mismatched = (Self.json(fail.stdout)["mismatched"] as? [[String: Any]] ?? []).compactMap { $0["pcr"] as? Int }
        #expect(mismatched == [7], "\(fail.stdout)")
        #expect(fail.stderr.split(separator: "\n").count == 1 && fail.stderr.contains("PCR 7"), "\(fail.stderr)")
        let text = try Run.guestvault(["policy", "check", "--vault", vm.vault, vm.state, "--socket", host])
        #expect(text.status == 15 && text.stdout.contains("MISMATCH: PCR 7"), "\(text.stdout)")

        // A request the channel does not know, and one too long, get an error; it goes on.
        for request in ["shutdown\n", String(repeating: "x", count: 4096)] {
            let socket = try StreamSocket.connect(.unix(path: host))
            try socket.setTimeout(seconds: 10)
            try socket.send(Array(request.utf8))
            let reply = String(decoding: try socket.receive(), as: UTF8.self)
            #expect(reply.contains("\"ok\":false"), "\(reply)")
            socket.close()
        }
        let last = try Self.pcr(7, tcti: tcti)

        // Stopped (SIGTERM stores the volatile state): the PCRs come from the container.
        #expect(serve.stop() == 0, "\(serve.text)")
        #expect(!FileManager.default.fileExists(atPath: host), "the host socket goes with serve")
        let stopped = try Run.guestvault(["pcrs", "--vault", vm.vault, vm.state, "--pcrs", "7", "--json"])
        #expect(stopped.status == 0, "\(stopped.stderr)")
        #expect((Self.json(stopped.stdout)["pcrs"] as? [String: String])?["7"] == last)
        let stoppedCheck = try Run.guestvault(["policy", "check", "--vault", vm.vault, vm.state])
        #expect(stoppedCheck.status == 15 && stoppedCheck.stdout.contains("PCR 7"), "\(stoppedCheck.stdout) \(stoppedCheck.stderr)")
        // Recorded from the stopped VM, the same boot passes.
        #expect(try Run.guestvault(["policy", "record", "--vault", vm.vault, vm.state]).status == 0)
        #expect(try Run.guestvault(["policy", "check", "--vault", vm.vault, vm.state]).status == 0)
    }

    @Test func aPCRReadBeforeTheTPMStartsSaysSo() throws {
        let vm = try TestVM()
        let port = freeLoopbackPortPair()
        let host = vm.dir.file("host.sock")
        // No not-need-init: the TPM waits for CMD_INIT, as under QEMU before the VM starts.
        let serve = try Child(GuestVaultBinary.path, [
            "serve", "--vault", vm.vault, vm.state, "--server", "tcp:127.0.0.1:\(port)", "--ctrl", "tcp:127.0.0.1:\(port + 1)",
            "--host-socket", host,
        ], log: vm.dir.file("serve.log"))
        #expect(waitFor(seconds: 30) { FileManager.default.fileExists(atPath: host) }, "\(serve.text)")
        let early = try Run.guestvault(["pcrs", "--vault", vm.vault, vm.state, "--socket", host])
        #expect(early.status != 0 && early.stderr.contains("not running"), "\(early.stderr)")
        #expect(serve.stop() == 0)
    }
}
