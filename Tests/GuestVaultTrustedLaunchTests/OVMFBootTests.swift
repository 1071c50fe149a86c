import Foundation
import GuestVaultSystem
import Testing

/// QEMU 7.2 + OVMF (Secure Boot, Microsoft keys) + `guestvault serve` under TCG, three
/// boots of one VM with no disk (docs/TRUSTED-LAUNCH.md):
/// 1. Secure Boot on: the firmware refuses the unsigned shell and stops at "No bootable
///    option"; PCR 7 is measured; the policy is recorded; the firmware's own writes to
///    its variables are sealed within the window and survive kill -9 of QEMU and serve.
/// 2. The same VM again: the policy passes (policy check, and serve --check-policy);
///    after a clean stop no plaintext VARS file remains.
/// 3. Secure Boot off (the template without keys): the policy fails naming PCR 7.
@Suite(.enabled(if: Peers.qemu && Peers.ovmf, "needs qemu-system-x86 and ovmf (apt install qemu-system-x86 ovmf)"))
struct OVMFBootTests {
    static let code = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
    static let secureTemplate = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
    static let plainTemplate = "/usr/share/OVMF/OVMF_VARS_4M.fd"

    /// A running boot: serve (with the VARS file on tmpfs and the host channel) and QEMU.
    final class Boot {
        let serve: Child
        let qemu: Child
        let serial: String
        let started = Date()

        init(_ vm: TestVM, vars: String, host: String, name: String, serveOptions: [String] = []) throws {
            let control = vm.dir.file("\(name).ctrl")
            serial = vm.dir.file("\(name).serial")
            let serve = try Child(GuestVaultBinary.path, [
                "serve", "--vault", vm.vault, vm.state, "--ctrl", "unix:\(control)", "--uefi-vars", vars,
                "--host-socket", host, "--log-level", "info",
            ] + serveOptions, log: vm.dir.file("\(name).serve.log"))
            _ = waitFor(seconds: 30) { FileManager.default.fileExists(atPath: control) || !serve.isRunning }
            self.serve = serve
            qemu = try Child(Run.which("qemu-system-x86_64")!, [
                "-machine", "q35,smm=on,accel=tcg", "-global", "driver=cfi.pflash01,property=secure,value=on",
                "-m", "256", "-nodefaults", "-display", "none", "-no-reboot",
                "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=\(OVMFBootTests.code)",
                "-drive", "if=pflash,format=raw,unit=1,file=\(vars)",
                "-chardev", "socket,id=chrtpm,path=\(control)", "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
                "-device", "tpm-tis,tpmdev=tpm0", "-serial", "file:\(serial)",
            ], log: vm.dir.file("\(name).qemu.log"))
        }

        var console: String { (try? String(contentsOfFile: serial, encoding: .utf8)) ?? "" }

        /// Waits for the firmware to stop (no bootable option, or the shell's prompt);
        /// returns the seconds from serve's start.
        func waitForFirmware() -> Double? {
            let done = waitFor(seconds: 400) {
                let text = console
                return text.contains("No bootable option") || text.contains("Shell>") || text.contains("startup.nsh") || !qemu.isRunning
            }
            return done && qemu.isRunning ? Date().timeIntervalSince(started) : nil
        }
    }

    static func firmwareVolumes(under directory: String) -> [String] {
        let names = (try? FileManager.default.subpathsOfDirectory(atPath: directory)) ?? []
        return names.filter { name in
            guard let handle = FileHandle(forReadingAtPath: "\(directory)/\(name)") else { return false }
            defer { try? handle.close() }
            let head = (try? handle.read(upToCount: 48)) ?? Data()
            return head.count == 48 && head[40..<44] == Data("_FVH".utf8)
        }
    }

    @Test func secureBootThePolicyAndTheSealedVariablesAcrossThreeBoots() throws {
        let vm = try TestVM(["--uefi", "--secure-boot"])
        let memory = MemoryDirectory()
        let vars = memory.file("vars.fd"), host = vm.dir.file("host.sock")
        let template = try #require(FileManager.default.contents(atPath: Self.secureTemplate))

        // Boot 1: Secure Boot on.
        do {
            let boot = try Boot(vm, vars: vars, host: host, name: "boot1")
            let seconds = try #require(boot.waitForFirmware(), "OVMF stopped: \(boot.console.suffix(600)) \(boot.serve.text)")
            print("trusted launch: serve start to \"No bootable option\" under TCG: \(String(format: "%.1f", seconds)) s")
            #expect(boot.console.contains("Security Violation"), "Secure Boot refused the unsigned shell")
            let pcrs = try Run.guestvault(["pcrs", "--vault", vm.vault, vm.state, "--socket", host, "--pcrs", "0-7", "--json"])
            #expect(pcrs.status == 0, "\(pcrs.stderr)")
            let pcr7 = ((try? JSONSerialization.jsonObject(with: Data(pcrs.stdout.utf8))) as? [String: Any])?["pcrs"] as? [String: String]
            #expect(pcr7?["7"].map { $0 != String(repeating: "0", count: 64) } == true, "PCR 7 is measured: \(pcrs.stdout)")
            #expect(try Run.guestvault(["policy", "record", "--vault", vm.vault, vm.state, "--socket", host]).status == 0)

            // The firmware wrote its variables on this first boot; within the window
            // (poll interval + commit) the container holds what the pflash file holds.
            let plaintext = try #require(FileManager.default.contents(atPath: vars))
            #expect(plaintext != template, "OVMF changed its variables on the first boot")
            #expect(waitFor(seconds: 60) { (try? vm.entry("uefi.vars")) == FileManager.default.contents(atPath: vars) },
                    "sealed within the window: \(boot.serve.text)")
            let sealed = try #require(try vm.entry("uefi.vars"))
            boot.qemu.stop(SIGKILL)
            boot.serve.stop(SIGKILL)
            #expect(try vm.entry("uefi.vars") == sealed, "the guest's change survived kill -9 of QEMU and serve")
            #expect(sealed != template)
            let show = try Run.guestvault(["uefi", "show", "--vault", vm.vault, vm.state])
            #expect(show.stdout.contains("SecureBoot          1 (enabled)"), "\(show.stdout.prefix(800))")
            #expect(show.stdout.contains("Microsoft Corporation UEFI CA 2011") && show.stdout.contains("Microsoft Windows Production PCA 2011"))
        }

        // Boot 2: the same VM; the leftover file of the killed run is taken back.
        do {
            let boot = try Boot(vm, vars: vars, host: host, name: "boot2", serveOptions: ["--check-policy", "--policy-settle", "2000"])
            _ = try #require(boot.waitForFirmware(), "OVMF stopped: \(boot.console.suffix(600)) \(boot.serve.text)")
            let check = try Run.guestvault(["policy", "check", "--vault", vm.vault, vm.state, "--socket", host, "--json"])
            #expect(check.status == 0, "the recorded policy passes on the next boot: \(check.stdout) \(check.stderr)")
            #expect(waitFor(seconds: 120) { boot.serve.text.contains("boot policy: pass") }, "serve --check-policy: \(boot.serve.text)")
            let status = try Run.guestvault(["policy", "status", "--socket", host])
            #expect(status.status == 0 && status.stdout.hasPrefix("pass"), "\(status.stdout) \(status.stderr)")
            boot.qemu.stop(SIGKILL)
            #expect(boot.serve.stop(SIGTERM) == 0, "\(boot.serve.text)")
            #expect(!FileManager.default.fileExists(atPath: vars), "no plaintext VARS after stop")
            #expect(Self.firmwareVolumes(under: memory.path).isEmpty && Self.firmwareVolumes(under: vm.dir.path).isEmpty,
                    "no plaintext VARS anywhere")
        }

        // Boot 3: Secure Boot off (no keys enrolled): the policy fails and names PCR 7.
        let put = try Run.guestvault(["put", "--vault", vm.vault, vm.state, "uefi.vars", Self.plainTemplate])
        #expect(put.status == 0, "\(put.stderr)")
        do {
            let boot = try Boot(vm, vars: vars, host: host, name: "boot3")
            _ = try #require(boot.waitForFirmware(), "OVMF stopped: \(boot.console.suffix(600)) \(boot.serve.text)")
            let check = try Run.guestvault(["policy", "check", "--vault", vm.vault, vm.state, "--socket", host, "--json"])
            #expect(check.status == 15, "\(check.stdout) \(check.stderr)")
            let object = (try? JSONSerialization.jsonObject(with: Data(check.stdout.utf8))) as? [String: Any] ?? [:]
            let mismatched = (object["mismatched"] as? [[String: Any]] ?? []).compactMap { $0["pcr"] as? Int }
            #expect(mismatched.contains(7), "PCR 7 named: \(check.stdout)")
            boot.qemu.stop(SIGKILL)
            #expect(boot.serve.stop(SIGTERM) == 0)
            #expect(!FileManager.default.fileExists(atPath: vars))
        }
    }
}
