import Foundation
import GuestVaultTestSupport
import Testing

/// The three front ends without libvirt: their flags, as swtpm's own tools mean them.
@Suite("Front ends", .serialized)
struct FrontEndTests {
    let directory = TemporaryDirectory("gv-frontends")
    var bin: String { directory.file("bin") }
    var vault: String { directory.file("vault") }

    init() throws {
        try makeVault(directory.file("vault"))
        try installFrontEnds(into: directory.file("bin"), vault: directory.file("vault"))
    }

    @Test func capabilitiesAreSwtpmsJSON() throws {
        for (name, arguments, type, feature) in [("swtpm", ["socket", "--print-capabilities"], "swtpm", "cmdarg-pwd-fd"),
                                                 ("swtpm", ["socket", "--tpm2", "--print-capabilities"], "swtpm", "cmdarg-migration"),
                                                 ("swtpm_setup", ["--print-capabilities"], "swtpm_setup", "tpm-2.0")] {
            let result = try frontEnd(bin, name, arguments)
            #expect(result.status == 0)
            let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            #expect(object?["type"] as? String == type)
            #expect((object?["features"] as? [String])?.contains(feature) == true)
        }
    }

    @Test func unknownFlagsAreNamed() throws {
        let swtpm = try frontEnd(bin, "swtpm", ["socket", "--tpm2", "--vtpm-proxy"])
        #expect(swtpm.status != 0)
        #expect(swtpm.stderr.contains("--vtpm-proxy"))
        let setup = try frontEnd(bin, "swtpm_setup", ["--tpm2", "--tpm-state", directory.file("s"), "--take-ownership"])
        #expect(setup.status != 0)
        #expect(setup.stderr.contains("--take-ownership"))
        let ioctl = try frontEnd(bin, "swtpm_ioctl", ["--unix", directory.file("none.sock"), "-x"])
        #expect(ioctl.status != 0)
        #expect(ioctl.stderr.contains("-x"))
        let tpm12 = try frontEnd(bin, "swtpm_setup", ["--tpm-state", directory.file("s")])
        #expect(tpm12.status != 0)
        #expect(tpm12.stderr.contains("--tpm2"))
    }

    /// swtpm_setup as libvirt runs it: a sealed container, EKs with certificates; then
    /// --not-overwrite keeps it, no flag refuses, --overwrite makes a new TPM in it.
    @Test func setupMakesASealedTPM() throws {
        let state = directory.file("vm/\(UUID().uuidString.lowercased())/tpm2")
        let setup = ["--tpm2", "--tpm-state", state, "--vmid", "vm1:\(UUID().uuidString)", "--logfile", directory.file("setup.log"),
                     "--createek", "--create-ek-cert", "--create-platform-cert", "--lock-nvram"]
        let first = try frontEnd(bin, "swtpm_setup", setup + ["--not-overwrite"])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(onlySealed(state))
        #expect(mode(of: state + "/tpm2-00.guestvault") & 0o777 == 0o600)
        let log = try String(contentsOfFile: directory.file("setup.log"), encoding: .utf8)
        #expect(log.contains("sealed container"))
        let identity = try tpmIdentity(bin: bin, stateDirectory: state)

        let before = FileManager.default.contents(atPath: state + "/tpm2-00.guestvault")
        #expect(try frontEnd(bin, "swtpm_setup", setup + ["--not-overwrite"]).status == 0)
        #expect(FileManager.default.contents(atPath: state + "/tpm2-00.guestvault") == before)
        let refused = try frontEnd(bin, "swtpm_setup", setup)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("--overwrite"))
        #expect(try tpmIdentity(bin: bin, stateDirectory: state) == identity)

        let overwritten = try frontEnd(bin, "swtpm_setup", setup + ["--overwrite"])
        #expect(overwritten.status == 0, "\(overwritten.stderr)")
        #expect(onlySealed(state))
        #expect(try tpmIdentity(bin: bin, stateDirectory: state) != identity)
    }

    /// swtpm socket --daemon --pid --terminate and swtpm_ioctl -s: the server listens when
    /// the parent returns, writes its pid, and removes its socket and pid file at the end.
    @Test func socketDaemonAndIoctl() throws {
        let state = directory.file("d/tpm2")
        #expect(try frontEnd(bin, "swtpm_setup", ["--tpm2", "--tpmstate", "dir://" + state, "--createek", "--not-overwrite"]).status == 0)
        let socket = directory.file("ctrl.sock"), pid = directory.file("swtpm.pid")
        let started = try frontEnd(bin, "swtpm", ["socket", "--tpm2", "--tpmstate", "dir=\(state),mode=0600", "--ctrl",
                                                  "type=unixio,path=\(socket),mode=0600", "--log", "file=\(directory.file("swtpm.log"))",
                                                  "--pid", "file=\(pid)", "--daemon"])
        #expect(started.status == 0, "\(started.stderr)")
        #expect(FileManager.default.fileExists(atPath: socket))
        let number = Int32((try String(contentsOfFile: pid, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        #expect(number > 0 && kill(number, 0) == 0)
        let caps = try frontEnd(bin, "swtpm_ioctl", ["--unix", socket, "-c"])
        #expect(caps.status == 0 && caps.stdout.contains("ptm capability"))
        #expect(try frontEnd(bin, "swtpm_ioctl", ["--unix", socket, "-s"]).status == 0)
        #expect(waitUntil { kill(number, 0) != 0 })
        #expect(!FileManager.default.fileExists(atPath: socket))
        #expect(!FileManager.default.fileExists(atPath: pid))
        #expect(onlySealed(state))
        // A state the front end cannot find: a clear error, not a new TPM somewhere else.
        let relative = try frontEnd(bin, "swtpm", ["socket", "--tpm2", "--tpmstate", "dir=relative/dir", "--ctrl", "type=unixio,path=\(socket)"])
        #expect(relative.status != 0 && relative.stderr.contains("absolute"))
    }

    /// An operator switching over: swtpm's plaintext state (made by the real swtpm_setup)
    /// is imported at the first start, the plaintext removed with a log line, and the
    /// TPM keeps its EK and NV; export-swtpm takes it back to swtpm.
    @Test func swtpmStateIsImportedOnFirstStart() throws {
        let state = directory.file("import/tpm2")
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        let made = try runProcess("/usr/bin/swtpm_setup", ["--tpm2", "--tpm-state", state, "--createek", "--create-ek-cert",
                                                           "--lock-nvram", "--overwrite"])
        try #require(made.status == 0, "\(made.stdout) \(made.stderr)")
        #expect(FileManager.default.fileExists(atPath: state + "/tpm2-00.permall"))
        // The identity as swtpm serves it.
        let realBin = directory.file("real")
        try FileManager.default.createDirectory(atPath: realBin, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: realBin + "/swtpm", withDestinationPath: "/usr/bin/swtpm")
        try FileManager.default.createSymbolicLink(atPath: realBin + "/swtpm_ioctl", withDestinationPath: "/usr/bin/swtpm_ioctl")
        let swtpmIdentity = try tpmIdentity(bin: realBin, stateDirectory: state)
        try? FileManager.default.removeItem(atPath: state + "/.lock")

        let identity = try tpmIdentity(bin: bin, stateDirectory: state)
        #expect(identity == swtpmIdentity)
        #expect(onlySealed(state))

        let back = directory.file("back")
        let export = try runProcess(GuestVaultBinary.path, ["export-swtpm", "--vault", vault, state + "/tpm2-00.guestvault", back])
        #expect(export.status == 0, "\(export.stderr)")
        #expect(try tpmIdentity(bin: realBin, stateDirectory: back) == swtpmIdentity)
    }

    /// Proxmox's calls: a preallocated zero-filled volume named with file://, --config,
    /// --runas 0 and --ecc; then swtpm with backend-uri=file:// and --daemon.
    @Test func proxmoxFileVolume() throws {
        let volume = directory.file("vm-100-disk-1.raw")
        #expect(FileManager.default.createFile(atPath: volume, contents: Data(count: 4 << 20)))
        let setup = try frontEnd(bin, "swtpm_setup", ["--tpmstate", "file://" + volume, "--createek", "--create-ek-cert",
                                                      "--create-platform-cert", "--lock-nvram", "--config", "/etc/swtpm_setup.conf",
                                                      "--runas", "0", "--not-overwrite", "--tpm2", "--ecc"])
        #expect(setup.status == 0, "\(setup.stderr)")
        let inspect = try runProcess(GuestVaultBinary.path, ["inspect", volume, "--json"])
        #expect(inspect.status == 0 && inspect.stdout.contains("tpm.permanent"), "\(inspect.stderr)")
        let socket = directory.file("pve.sock")
        let started = try frontEnd(bin, "swtpm", ["socket", "--tpmstate", "backend-uri=file://\(volume),mode=0600", "--ctrl",
                                                  "type=unixio,path=\(socket),mode=0600", "--pid", "file=\(directory.file("pve.pid"))",
                                                  "--terminate", "--daemon", "--tpm2"])
        #expect(started.status == 0, "\(started.stderr)")
        #expect(try frontEnd(bin, "swtpm_ioctl", ["--unix", socket, "-s"]).status == 0)
        #expect(waitUntil { !FileManager.default.fileExists(atPath: socket) })
    }
}
