import Foundation
import Testing

/// QEMU 7.2 (q35, tpm-tis, TCG, no disk) with `-tpmdev emulator` on `guestvault serve`:
/// SeaBIOS measures itself into the vTPM and reaches "No bootable device"; the PCRs it
/// extended survive through STORE_VOLATILE and a restart that resumes the volatile state.
@Suite(.enabled(if: Peers.qemu && Peers.tpm2Tools, "needs qemu-system-x86, seabios and tpm2-tools (apt install qemu-system-x86 seabios tpm2-tools)"))
struct QEMUTests {
    @Test func seabiosMeasuresIntoTheVTPMAndThePCRsSurviveARestart() throws {
        let dir = TemporaryDirectory("qemu")
        let vault = dir.file("vault"), state = dir.file("vm.state"), socket = dir.file("tpm.sock"), log = dir.file("seabios.log")
        #expect(try Run.guestvault(["vault", "init", "--vault", vault]).status == 0)
        #expect(try Run.guestvault(["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", state]).status == 0)

        let serve = Process()
        serve.executableURL = URL(fileURLWithPath: GuestVaultBinary.path)
        serve.arguments = ["serve", "--vault", vault, state, "--ctrl", "unix:\(socket)", "--verbose"]
        let serveLog = Pipe()
        serve.standardError = serveLog
        try serve.run()
        defer { if serve.isRunning { kill(serve.processIdentifier, SIGKILL) } }
        waitUntil { FileManager.default.fileExists(atPath: socket) }

        let qemu = Process()
        qemu.executableURL = URL(fileURLWithPath: Run.which("qemu-system-x86_64")!)
        qemu.arguments = [
            "-machine", "q35,accel=tcg", "-m", "128", "-nodefaults", "-display", "none", "-no-reboot",
            "-chardev", "socket,id=chrtpm,path=\(socket)",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", "tpm-tis,tpmdev=tpm0",
            "-chardev", "file,id=seabios,path=\(log)",
            "-device", "isa-debugcon,iobase=0x402,chardev=seabios",
        ]
        qemu.standardOutput = FileHandle.nullDevice
        qemu.standardError = FileHandle.nullDevice
        try qemu.run()
        defer { if qemu.isRunning { kill(qemu.processIdentifier, SIGKILL) } }
        var reached = false
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline && qemu.isRunning {
            if let text = try? String(contentsOfFile: log, encoding: .utf8), text.contains("No bootable device") { reached = true; break }
            usleep(100_000)
        }
        #expect(reached, "SeaBIOS reached \"No bootable device\" (log: \((try? String(contentsOfFile: log, encoding: .utf8))?.suffix(400) ?? ""))")

        // Store the volatile state over the control channel, as an operator would, then stop.
        if let ioctl = Run.which("swtpm_ioctl") {
            let stored = try Run.program(ioctl, ["--unix", socket, "-v"])
            #expect(stored.status == 0, "swtpm_ioctl -v: \(stored.stderr)")
        }
        kill(qemu.processIdentifier, SIGKILL)
        qemu.waitUntilExit()
        kill(serve.processIdentifier, SIGTERM)
        serve.waitUntilExit()
        #expect(serve.terminationStatus == 0)

        // A new server resumes the volatile state: PCR 0 holds SeaBIOS' measurements.
        let server = try ServedTPM(vault: vault, state: state)
        let pcrs = try Run.program(Run.which("tpm2_pcrread")!, ["sha256:0,1,2,3,4,5,6,7"], environment: server.tcti)
        #expect(pcrs.status == 0, "\(pcrs.stderr)")
        print("qemu: PCRs after SeaBIOS, read back through a restarted server:\n\(pcrs.text)")
        let pcr0 = pcrs.text.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("0 :") }.map(String.init) ?? ""
        #expect(!pcr0.isEmpty && !pcr0.contains("0x0000000000000000000000000000000000000000000000000000000000000000"), "PCR 0 is no longer zero: \(pcr0)")
        #expect(server.terminate() == 0)
    }
}
