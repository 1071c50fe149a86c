import Dispatch
import Foundation
import GuestVaultTestSupport
import Testing

/// A directory on tmpfs (/dev/shm), mode 0700, removed on deinit: where the plaintext
/// VARS files live while a VM runs (/run/guestvault on a host; /run is not tmpfs here).
final class MemoryDirectory: @unchecked Sendable {
    let path: String

    init(_ name: String) throws {
        path = "/dev/shm/\(name)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
    }

    func file(_ name: String) -> String { "\(path)/\(name)" }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

enum OVMF {
    static let secureTemplate = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
    static let plainTemplate = "/usr/share/OVMF/OVMF_VARS_4M.fd"
    static let smallTemplate = "/usr/share/OVMF/OVMF_VARS.fd"
    static var available: Bool { FileManager.default.fileExists(atPath: secureTemplate) && FileManager.default.fileExists(atPath: smallTemplate) }
}

/// An entry of a container (`guestvault get`), or nil when it has none.
func containerEntry(_ container: String, _ name: String, vault: String) throws -> Data? {
    try runProcessData(GuestVaultBinary.path, ["get", "--vault", vault, container, name, "-"])
}

/// Standard output of a program as bytes (a VARS file is binary), nil if it fails.
func runProcessData(_ path: String, _ arguments: [String]) throws -> Data? {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let out = Pipe()
    process.standardOutput = out
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return process.terminationStatus == 0 ? data : nil
}

/// The `swtpm` front end with the UEFI variables by libvirt's convention
/// (docs/LIBVIRT.md, "UEFI variables"), without libvirt: what libvirt would have
/// done (copy the `<nvram template>` to /run/guestvault/nvram/UUID_VARS.fd) is done by
/// the test, and the nvram directory is moved with GUESTVAULT_NVRAM_DIR.
@Suite("libvirt UEFI variables without libvirt", .enabled(if: OVMF.available, "needs ovmf"))
struct LibvirtNVRAMFileTests {
    let directory = TemporaryDirectory("gv-nvram")
    let vault: String
    let bin: String
    let uuid = UUID().uuidString.lowercased()
    var state: String { directory.file("\(uuid)/tpm2") }
    var container: String { state + "/tpm2-00.guestvault" }

    init() throws {
        vault = directory.file("vault")
        bin = directory.file("bin")
        try makeVault(vault)
        try installFrontEnds(into: bin, vault: vault)
        let setup = try runProcess("\(bin)/swtpm_setup", ["--tpm2", "--tpmstate", "dir://" + state, "--vmid", "gv:\(uuid)", "--createek", "--not-overwrite"])
        try #require(setup.status == 0, "\(setup.stderr)")
    }

    /// Starts `swtpm socket --daemon` as libvirt does; returns its result, and stops it
    /// (swtpm_ioctl -s, then waits for it to end) if it started.
    func startAndStop(nvram: String, whileRunning: () throws -> Void = {}) throws -> (status: Int32, stderr: String) {
        let socket = directory.file("ctrl.sock"), pid = directory.file("swtpm.pid")
        let started = try runProcess("\(bin)/swtpm", ["socket", "--tpm2", "--tpmstate", "dir=\(state),mode=0600", "--ctrl", "type=unixio,path=\(socket),mode=0600",
                                                      "--log", "file=\(directory.file("swtpm.log"))", "--pid", "file=\(pid)", "--terminate", "--daemon"],
                                     environment: ["GUESTVAULT_NVRAM_DIR": nvram])
        guard started.status == 0 else { return (started.status, started.stderr) }
        let number = Int32((try? String(contentsOfFile: pid, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
        defer {
            _ = try? runProcess("\(bin)/swtpm_ioctl", ["--unix", socket, "-s"])
            waitUntil(attempts: 1000) { number <= 0 || kill(number, 0) != 0 }
        }
        try whileRunning()
        return (started.status, started.stderr)
    }

    func varsPath(_ nvram: MemoryDirectory) -> String { nvram.file("\(uuid)_VARS.fd") }

    func copyTemplate(_ template: String, to path: String, mode: Int = 0o600) throws {
        try FileManager.default.copyItem(atPath: template, toPath: path)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
    }

    /// First start: libvirt's copy of the template is sealed in as the VM's variables; a
    /// change QEMU makes is sealed; at the end the plaintext is gone. Next start: libvirt
    /// copies a (different) template again, and the front end writes the VM's sealed
    /// variables over it. A template of another size (another firmware) is refused.
    @Test func theTemplateCopyIsSealedInThenReplacedByTheSealedVariables() throws {
        let nvram = try MemoryDirectory("gv-nvram")
        let path = varsPath(nvram)
        let template = try Data(contentsOf: URL(fileURLWithPath: OVMF.secureTemplate))
        try copyTemplate(OVMF.secureTemplate, to: path)
        var changed = template
        let first = try startAndStop(nvram: nvram.path) {
            #expect(try containerEntry(container, "uefi.vars", vault: vault) == template, "sealed in before QEMU would start")
            #expect(FileManager.default.contents(atPath: path) == template)
            #expect(mode(of: path) == 0o600)
            // What QEMU would do: write the variable store in place.
            changed[changed.count - 100] ^= 0x5a
            let handle = try #require(FileHandle(forWritingAtPath: path))
            try handle.seek(toOffset: UInt64(changed.count - 100))
            try handle.write(contentsOf: changed[(changed.count - 100)...].prefix(1))
            try handle.close()
            // Sealed while it runs (the next poll), not only at the end.
            #expect(waitUntil(attempts: 1000) { (try? containerEntry(container, "uefi.vars", vault: vault)) == changed },
                    "the change was not sealed while the front end ran")
        }
        #expect(first.status == 0, "\(first.stderr)")
        #expect(!FileManager.default.fileExists(atPath: path), "the plaintext is removed at the end")
        #expect(try containerEntry(container, "uefi.vars", vault: vault) == changed)
        #expect(onlySealed(state))

        // libvirt copies a template again (Secure Boot off, same size): the VM's own
        // variables win.
        try copyTemplate(OVMF.plainTemplate, to: path)
        let second = try startAndStop(nvram: nvram.path) {
            #expect(FileManager.default.contents(atPath: path) == changed)
        }
        #expect(second.status == 0, "\(second.stderr)")
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(try containerEntry(container, "uefi.vars", vault: vault) == changed)

        // Another firmware's template (128 KiB): refused, nothing written, left alone.
        try copyTemplate(OVMF.smallTemplate, to: path)
        let small = try Data(contentsOf: URL(fileURLWithPath: OVMF.smallTemplate))
        let third = try startAndStop(nvram: nvram.path)
        #expect(third.status != 0 && third.stderr.contains("firmware"), "\(third.stderr)")
        #expect(FileManager.default.contents(atPath: path) == small)
        #expect(try containerEntry(container, "uefi.vars", vault: vault) == changed)
    }

    enum Hostile: String, CaseIterable, Sendable {
        case symlink, fifo, otherUsersFile, groupReadableFile, otherUsersDirectory, directoryOnDisk
    }

    /// Something at the nvram path that is not a file the front end may take: the VM's
    /// TPM does not start (libvirt's start fails with the message), nothing is written to
    /// it or through it, and it is left where it is.
    @Test(.enabled(if: OtherUser.isAvailable), arguments: Hostile.allCases)
    func aHostileNVRAMPathIsRefusedAndLeftAlone(_ hostile: Hostile) throws {
        let nvram = try MemoryDirectory("gv-nvram")
        var path = varsPath(nvram)
        let template = try Data(contentsOf: URL(fileURLWithPath: OVMF.secureTemplate))
        let victim = directory.file("victim")
        try template.write(to: URL(fileURLWithPath: victim))
        var directoryUsed = nvram
        var onDisk: String?
        switch hostile {
        case .symlink:
            // The other user's symlink to a file of root's: never written through.
            #expect(symlink(victim, path) == 0 && lchown(path, OtherUser.uid, OtherUser.gid) == 0)
        case .fifo:
            #expect(mkfifo(path, 0o600) == 0)
        case .otherUsersFile:
            try copyTemplate(OVMF.secureTemplate, to: path)
            #expect(chown(path, OtherUser.uid, OtherUser.gid) == 0)
        case .groupReadableFile:
            try copyTemplate(OVMF.secureTemplate, to: path, mode: 0o640)
        case .otherUsersDirectory:
            let other = try MemoryDirectory("gv-nvram-other")
            #expect(chown(other.path, OtherUser.uid, OtherUser.gid) == 0)
            path = other.file("\(uuid)_VARS.fd")
            try copyTemplate(OVMF.secureTemplate, to: path)
            directoryUsed = other
        case .directoryOnDisk:
            let disk = directory.file("nvram-on-disk")
            try FileManager.default.createDirectory(atPath: disk, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
            let type = try runProcess("/usr/bin/stat", ["-f", "-c", "%T", disk]).stdout
            try #require(!type.contains("tmpfs"), "the test directory is on tmpfs here")
            path = disk + "/\(uuid)_VARS.fd"
            try copyTemplate(OVMF.secureTemplate, to: path)
            onDisk = disk
        }
        let before = try FileManager.default.attributesOfItem(atPath: path)
        let result = try startAndStop(nvram: onDisk ?? directoryUsed.path)
        #expect(result.status != 0, "the front end served with \(hostile) at the nvram path")
        let named = hostile == .otherUsersDirectory ? directoryUsed.path : hostile == .directoryOnDisk ? "tmpfs" : path
        #expect(result.stderr.contains(named), "\(result.stderr)")
        // Left alone: still there, same kind, owner and mode; the victim untouched.
        let after = try FileManager.default.attributesOfItem(atPath: path)
        #expect(after[.type] as? FileAttributeType == before[.type] as? FileAttributeType)
        #expect(after[.ownerAccountID] as? NSNumber == before[.ownerAccountID] as? NSNumber)
        #expect(after[.posixPermissions] as? NSNumber == before[.posixPermissions] as? NSNumber)
        #expect(FileManager.default.contents(atPath: victim) == template)
        if hostile != .fifo && hostile != .symlink { #expect(FileManager.default.contents(atPath: path) == template) }
        #expect(try containerEntry(container, "uefi.vars", vault: vault) == nil, "nothing was sealed from it")
    }
}

extension LibvirtTests {
    /// An OVMF Secure Boot domain whose `<nvram>` is GuestVault's tmpfs path (the one
    /// change an operator makes to the domain, docs/LIBVIRT.md).
    static func uefiDomainXML(name: String, uuid: String, serial: String) -> String {
        """
        <domain type='qemu'>
          <name>\(name)</name>
          <uuid>\(uuid)</uuid>
          <memory unit='MiB'>256</memory>
          <vcpu>1</vcpu>
          <os>
            <type arch='x86_64' machine='q35'>hvm</type>
            <loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader>
            <nvram template='\(OVMF.secureTemplate)'>/run/guestvault/nvram/\(uuid)_VARS.fd</nvram>
          </os>
          <features><acpi/><smm state='on'/></features>
          <devices>
            <tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>
            <serial type='file'><source path='\(serial)'/></serial>
            <video><model type='none'/></video>
          </devices>
        </domain>
        """
    }

    /// Issue 16 under libvirt, with the real libvirtd 9.0, QEMU/TCG and OVMF Secure Boot:
    /// 1. first start: libvirt copies the template to the tmpfs `<nvram>`, the swtpm front
    ///    end seals it in; the firmware writes its first-boot variables; after `destroy`
    ///    the container's `uefi.vars` is what QEMU wrote and no plaintext remains;
    /// 2. the store without keys put into the container: `start --paused`, the file QEMU
    ///    opens holds it (not libvirt's copy of the Secure Boot template), and the
    ///    firmware, Secure Boot now off, starts the shell it refused on the first boot;
    /// 3. `migrate --live` to a second daemon (its own vault and tmpfs): QEMU carries the
    ///    pflash in its stream and writes it to the destination's file when the VM runs
    ///    there; the destination's container holds the same variables, sealed, and no
    ///    plaintext VARS remains on either side after the VM stops; a save and restore
    ///    there keeps them too.
    @Test(.enabled(if: OVMF.available)) func uefiVariablesFollowTheVM() throws {
        let directory = TemporaryDirectory("gv-libvirt-uefi")
        let (binA, binB) = try installTwoHosts(in: directory)
        let (vaultA, vaultB) = (directory.file("vault-a"), directory.file("vault-b"))
        let (runA, runB) = (try MemoryDirectory("gv-run-a"), try MemoryDirectory("gv-run-b"))
        for run in [runA, runB] {
            try FileManager.default.createDirectory(atPath: run.file("nvram"), withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        }
        let port = UInt16.random(in: 25_001...30_000)
        let source = LibvirtDaemon(root: directory.file("a"), frontEnds: binA, guestVaultRun: runA.path)
        let destination = LibvirtDaemon(root: directory.file("b"), frontEnds: binB, listenPort: port, guestVaultRun: runB.path)
        try source.start()
        defer { source.stop() }
        try destination.start()
        defer { destination.stop() }

        let uuid = UUID().uuidString.lowercased()
        let serial = directory.file("serial.log")
        try Self.uefiDomainXML(name: "uefi", uuid: uuid, serial: serial).write(toFile: directory.file("dom.xml"), atomically: true, encoding: .utf8)
        try source.virshOK(["define", directory.file("dom.xml")])
        let varsA = source.hostPath("/run/guestvault/nvram/\(uuid)_VARS.fd")
        let varsB = destination.hostPath("/run/guestvault/nvram/\(uuid)_VARS.fd")
        let stateA = source.hostPath("/var/lib/libvirt/swtpm/\(uuid)/tpm2")
        let stateB = destination.hostPath("/var/lib/libvirt/swtpm/\(uuid)/tpm2")
        let template = try Data(contentsOf: URL(fileURLWithPath: OVMF.secureTemplate))

        // 1. First boot.
        let firstStart = try Self.seconds { try source.virshOK(["start", "uefi"]) }
        let bootStarted = DispatchTime.now().uptimeNanoseconds
        #expect(FileManager.default.fileExists(atPath: varsA) && mode(of: varsA) == 0o600)
        let booted = waitUntil(attempts: 4000, interval: 100_000) {
            let console = (try? String(contentsOfFile: serial, encoding: .utf8)) ?? ""
            return console.contains("No bootable option") || console.contains("Shell>")
        }
        try #require(booted, "the firmware did not finish: \((try? String(contentsOfFile: serial, encoding: .utf8)) ?? "")")
        let firmwareSeconds = Double(DispatchTime.now().uptimeNanoseconds - bootStarted) / 1e9
        let written = try #require(FileManager.default.contents(atPath: varsA))
        #expect(written != template, "the firmware wrote its first-boot variables")
        try source.virshOK(["destroy", "uefi"])
        #expect(waitUntil(attempts: 1000) { !FileManager.default.fileExists(atPath: varsA) }, "no plaintext after the stop")
        #expect(onlySealed(stateA))
        let sealedFirst = try #require(try containerEntry(stateA + "/tpm2-00.guestvault", "uefi.vars", vault: vaultA))
        #expect(sealedFirst == written, "the container holds what QEMU wrote")
        let containerBytes = try #require(FileManager.default.contents(atPath: stateA + "/tpm2-00.guestvault"))
        // Sealed: the Microsoft certificates in db/KEK (DER, ASCII names) are not in the file.
        #expect(written.range(of: Data("Microsoft Corporation".utf8)) != nil)
        #expect(containerBytes.range(of: Data("Microsoft Corporation".utf8)) == nil)

        // 2. The sealed variables are what QEMU runs on, not libvirt's template copy: put
        //    the store without keys (Secure Boot off) into the stopped VM's container; the
        //    file QEMU opens holds it, and the firmware now starts the unsigned shell that
        //    Secure Boot refused on the first boot.
        let firstConsole = (try? String(contentsOfFile: serial, encoding: .utf8)) ?? ""
        #expect(!firstConsole.contains("Shell>"), "Secure Boot refused the shell on the first boot")
        let put = try runProcess(GuestVaultBinary.path, ["put", "--vault", vaultA, stateA + "/tpm2-00.guestvault", "uefi.vars", OVMF.plainTemplate])
        try #require(put.status == 0, "\(put.stderr)")
        let plain = try Data(contentsOf: URL(fileURLWithPath: OVMF.plainTemplate))
        try Data().write(to: URL(fileURLWithPath: serial))
        let secondStart = try Self.seconds { try source.virshOK(["start", "--paused", "uefi"]) }
        #expect(FileManager.default.contents(atPath: varsA) == plain, "the file QEMU opened holds the sealed store, not libvirt's copy of the Secure Boot template")
        try source.virshOK(["resume", "uefi"])
        try #require(waitUntil(attempts: 4000, interval: 100_000) {
            ((try? String(contentsOfFile: serial, encoding: .utf8)) ?? "").contains("Shell>")
        }, "the second boot (Secure Boot off) did not reach the shell: \((try? String(contentsOfFile: serial, encoding: .utf8)) ?? "")")
        let beforeMigration = try #require(FileManager.default.contents(atPath: varsA))

        // 3. Live migration to the second daemon.
        let migrationSeconds = try Self.seconds { try source.virshOK(["migrate", "--live", "--persistent", "--undefinesource", "uefi", "qemu+tcp://127.0.0.1:\(port)/system",
                            "--listen-address", "127.0.0.1", "--migrateuri", "tcp://127.0.0.1:\(port + 1)"]) }
        print(String(format: "libvirt UEFI: virsh start %.2f s (first, template sealed in), %.2f s (paused, sealed store written), firmware to 'No bootable option' %.1f s, migrate --live %.2f s",
                     firstStart, secondStart, firmwareSeconds, migrationSeconds))
        #expect(waitUntil(attempts: 1000) { !FileManager.default.fileExists(atPath: varsA) }, "the source's plaintext is removed when its QEMU ends")
        #expect(FileManager.default.fileExists(atPath: varsB))
        // save and restore on the destination: the same path through QEMU's stream (a
        // file this time), so the variables survive it too.
        try destination.virshOK(["save", "uefi", directory.file("uefi.save")])
        #expect(waitUntil(attempts: 1000) { !FileManager.default.fileExists(atPath: varsB) }, "no plaintext while saved")
        try destination.virshOK(["restore", directory.file("uefi.save")])
        try destination.virshOK(["destroy", "uefi"])
        #expect(waitUntil(attempts: 1000) { !FileManager.default.fileExists(atPath: varsB) }, "no plaintext after the stop")
        #expect(onlySealed(stateB))
        let destinationFinal = try #require(try containerEntry(stateB + "/tpm2-00.guestvault", "uefi.vars", vault: vaultB))
        #expect(destinationFinal == beforeMigration, "the destination's container holds the source's variables")
        #expect(destinationFinal != template && destinationFinal != plain, "the firmware's writes of the second boot came along")
        let destinationBytes = try #require(FileManager.default.contents(atPath: stateB + "/tpm2-00.guestvault"))
        #expect(destinationBytes.range(of: Data("Microsoft Corporation".utf8)) == nil)
        // The source's state directory: gone with the migration, or only sealed.
        #expect(!FileManager.default.fileExists(atPath: stateA) || onlySealed(stateA), "\(stateFiles(stateA))")
        // No VARS file anywhere else in either daemon's directories (libvirt's default nvram directory included).
        for root in [directory.path, runA.path, runB.path] {
            let names = (FileManager.default.enumerator(atPath: root)?.allObjects as? [String]) ?? []
            #expect(names.filter { $0.hasSuffix("_VARS.fd") }.isEmpty, "\(root): \(names.filter { $0.hasSuffix("_VARS.fd") })")
        }
    }
}

extension LibvirtTests {
    /// QEMU as `libvirt-qemu` with libvirt's dynamic ownership (the DAC model of a
    /// Debian host; the front ends still run as root, `swtpm_user = "root"`): libvirt's
    /// nvram file belongs to QEMU's user (uid of libvirt-qemu, 0600), the front end takes
    /// it (an allowed owner) and seals the firmware's first writes; no plaintext remains.
    /// (libvirt then logs that it cannot restore the owner of the removed file: harmless.
    /// `define` takes about a minute here: libvirt's capability probe as libvirt-qemu.)
    @Test(.enabled(if: OVMF.available && getpwnam("libvirt-qemu") != nil, "needs ovmf and the libvirt-qemu user"))
    func uefiVariablesWithQEMUAsItsOwnUser() throws {
        let directory = TemporaryDirectory("gv-libvirt-dac")
        #expect(chmod(directory.path, 0o711) == 0)
        let vault = directory.file("vault")
        try makeVault(vault)
        let bin = directory.file("bin")
        try installFrontEnds(into: bin, vault: vault)
        let run = try MemoryDirectory("gv-run-dac")
        #expect(chmod(run.path, 0o711) == 0)
        try FileManager.default.createDirectory(atPath: run.file("nvram"), withIntermediateDirectories: false, attributes: [.posixPermissions: 0o711])
        let daemon = LibvirtDaemon(root: directory.file("root"), frontEnds: bin, guestVaultRun: run.path,
                                   qemuSettings: ["user": "\"libvirt-qemu\"", "group": "\"libvirt-qemu\"", "dynamic_ownership": "1"])
        try daemon.start()
        defer { daemon.stop() }
        let uuid = UUID().uuidString.lowercased()
        let serial = directory.file("serial.log")
        try Self.uefiDomainXML(name: "dac", uuid: uuid, serial: serial).write(toFile: directory.file("dom.xml"), atomically: true, encoding: .utf8)
        try daemon.virshOK(["define", directory.file("dom.xml")])
        try daemon.virshOK(["start", "dac"])
        let vars = daemon.hostPath("/run/guestvault/nvram/\(uuid)_VARS.fd")
        let owner = try FileManager.default.attributesOfItem(atPath: vars)[.ownerAccountID] as? NSNumber
        print("libvirt UEFI (QEMU as libvirt-qemu): the nvram file belongs to uid \(owner?.stringValue ?? "?"), mode \(String(mode(of: vars), radix: 8))")
        // The firmware's first writes (QEMU, as libvirt-qemu, writing the file it owns);
        // no need to wait for the whole boot.
        let template = try Data(contentsOf: URL(fileURLWithPath: OVMF.secureTemplate))
        try #require(waitUntil(attempts: 4000, interval: 100_000) { FileManager.default.contents(atPath: vars) != template },
                     "the firmware wrote nothing: \((try? String(contentsOfFile: serial, encoding: .utf8)) ?? "")")
        try daemon.virshOK(["destroy", "dac"])
        #expect(waitUntil(attempts: 1000) { !FileManager.default.fileExists(atPath: vars) }, "no plaintext after the stop")
        let state = daemon.hostPath("/var/lib/libvirt/swtpm/\(uuid)/tpm2")
        let sealed = try #require(try containerEntry(state + "/tpm2-00.guestvault", "uefi.vars", vault: vault))
        #expect(sealed != template, "QEMU's writes were sealed")
        #expect(onlySealed(state))
    }
}
