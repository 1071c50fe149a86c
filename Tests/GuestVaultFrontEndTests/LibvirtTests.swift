import Dispatch
import Foundation
import GuestVaultTestSupport
import Testing

/// The real libvirt 9.0 daemon with the front ends first in its PATH, QEMU under TCG
/// with OVMF and Secure Boot (docs/LIBVIRT.md). One daemon at a time.
@Suite("libvirt", .serialized)
struct LibvirtTests {
    static func domainXML(name: String, uuid: String, secret: String?, serial: String) -> String {
        """
        <domain type='qemu'>
          <name>\(name)</name>
          <uuid>\(uuid)</uuid>
          <memory unit='MiB'>256</memory>
          <vcpu>1</vcpu>
          <os firmware='efi'>
            <type arch='x86_64' machine='q35'>hvm</type>
            <firmware><feature enabled='yes' name='secure-boot'/><feature enabled='yes' name='enrolled-keys'/></firmware>
          </os>
          <features><acpi/><smm state='on'/></features>
          <devices>
            <tpm model='tpm-crb'><backend type='emulator' version='2.0'>\(secret.map { "<encryption secret='\($0)'/>" } ?? "")</backend></tpm>
            <serial type='file'><source path='\(serial)'/></serial>
            <video><model type='none'/></video>
          </devices>
        </domain>
        """
    }

    /// Defines a libvirt secret with a random value; returns its UUID.
    static func defineSecret(_ daemon: LibvirtDaemon, in directory: TemporaryDirectory) throws -> String {
        let uuid = UUID().uuidString.lowercased()
        let xml = "<secret ephemeral='no' private='yes'><uuid>\(uuid)</uuid><description>vTPM</description></secret>"
        try xml.write(toFile: directory.file("secret.xml"), atomically: true, encoding: .utf8)
        try daemon.virshOK(["secret-define", directory.file("secret.xml")])
        try daemon.virshOK(["secret-set-value", uuid, Data("not a newline-terminated secret".utf8).base64EncodedString()])
        return uuid
    }

    static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    /// define, start, save, restore, destroy, undefine --keep-tpm; with and without a VM
    /// secret. After each step the state directory holds only the sealed container, and
    /// the EK, its certificate and an NV value are the same.
    @Test(arguments: [false, true])
    func lifecycle(withSecret: Bool) throws {
        let directory = TemporaryDirectory("gv-libvirt")
        let vault = directory.file("vault")
        try makeVault(vault)
        let bin = directory.file("bin")
        try installFrontEnds(into: bin, vault: vault)
        let daemon = LibvirtDaemon(root: directory.file("root"), frontEnds: bin)
        try daemon.start()
        defer { daemon.stop() }

        let uuid = UUID().uuidString.lowercased()
        let secret = withSecret ? try Self.defineSecret(daemon, in: directory) : nil
        try Self.domainXML(name: "gv", uuid: uuid, secret: secret, serial: directory.file("serial.log"))
            .write(toFile: directory.file("dom.xml"), atomically: true, encoding: .utf8)
        try daemon.virshOK(["define", directory.file("dom.xml")])
        let startSeconds = try Self.seconds { try daemon.virshOK(["start", "gv"]) }
        print("virsh start with the front ends (secret: \(withSecret)): \(String(format: "%.2f", startSeconds)) s")
        let state = daemon.hostPath("/var/lib/libvirt/swtpm/\(uuid)/tpm2")
        #expect(onlySealed(state), "\(stateFiles(state))")
        try daemon.virshOK(["destroy", "gv"])
        #expect(onlySealed(state))

        // The TPM as the VM left it, plus an NV value to follow through every step.
        let nv = "guestvault-nv-\(withSecret)"
        try writeTestNV(bin: bin, stateDirectory: state, index: "0x01500016", value: nv)
        let identity = try tpmIdentity(bin: bin, stateDirectory: state, nvIndex: "0x01500016")
        #expect(identity.contains(nv))

        try daemon.virshOK(["start", "gv"])
        try daemon.virshOK(["save", "gv", directory.file("gv.save")])
        #expect(onlySealed(state, plaintext: nv))
        #expect(try tpmIdentity(bin: bin, stateDirectory: state, nvIndex: "0x01500016") == identity)
        try daemon.virshOK(["restore", directory.file("gv.save")])
        try daemon.virshOK(["destroy", "gv"])
        #expect(onlySealed(state, plaintext: nv))
        #expect(try tpmIdentity(bin: bin, stateDirectory: state, nvIndex: "0x01500016") == identity)

        if withSecret {
            // libvirt's secret is an additional protector of the container.
            let inspect = try runProcess(GuestVaultBinary.path, ["inspect", state + "/tpm2-00.guestvault", "--json"])
            #expect(inspect.stdout.contains("passphrase"), "\(inspect.stdout) \(inspect.stderr)")
        }
        try daemon.virshOK(["undefine", "--nvram", "--keep-tpm", "gv"])
        #expect(onlySealed(state, plaintext: nv))
        #expect(try tpmIdentity(bin: bin, stateDirectory: state, nvIndex: "0x01500016") == identity)
        let log = try String(contentsOfFile: daemon.hostPath("/var/log/swtpm/libvirt/qemu/gv-swtpm.log"), encoding: .utf8)
        #expect(log.contains("serving the sealed TPM state"))
    }

    /// virsh migrate --live between two daemons on 127.0.0.1, each with its own vault
    /// (two hosts). Today the blobs cross as main's serve sends them (plaintext on
    /// QEMU's migration stream; the "migration" branch seals them): the destination's
    /// state directory holds only its sealed container, with the same EK and NV.
    @Test func liveMigration() throws {
        let directory = TemporaryDirectory("gv-libvirt-mig")
        let (binA, binB) = try installTwoHosts(in: directory)
        let port = UInt16.random(in: 20_000...25_000)
        let source = LibvirtDaemon(root: directory.file("a"), frontEnds: binA)
        let destination = LibvirtDaemon(root: directory.file("b"), frontEnds: binB, listenPort: port)
        try source.start()
        defer { source.stop() }
        try destination.start()
        defer { destination.stop() }

        let uuid = UUID().uuidString.lowercased()
        try Self.domainXML(name: "mig", uuid: uuid, secret: nil, serial: directory.file("serial.log"))
            .write(toFile: directory.file("dom.xml"), atomically: true, encoding: .utf8)
        try source.virshOK(["define", directory.file("dom.xml")])
        try source.virshOK(["start", "mig"])
        try source.virshOK(["destroy", "mig"])
        let sourceState = source.hostPath("/var/lib/libvirt/swtpm/\(uuid)/tpm2")
        try writeTestNV(bin: binA, stateDirectory: sourceState, index: "0x01500017", value: "migrated-nv-value")
        let identity = try tpmIdentity(bin: binA, stateDirectory: sourceState, nvIndex: "0x01500017")

        try source.virshOK(["start", "mig"])
        try source.virshOK(["migrate", "--live", "--persistent", "--undefinesource", "mig", "qemu+tcp://127.0.0.1:\(port)/system",
                            "--listen-address", "127.0.0.1", "--migrateuri", "tcp://127.0.0.1:\(port + 1)"])
        let destinationState = destination.hostPath("/var/lib/libvirt/swtpm/\(uuid)/tpm2")
        #expect(onlySealed(destinationState, plaintext: "migrated-nv-value"), "\(stateFiles(destinationState))")
        try destination.virshOK(["destroy", "mig"])
        #expect(onlySealed(destinationState, plaintext: "migrated-nv-value"))
        #expect(try tpmIdentity(bin: binB, stateDirectory: destinationState, nvIndex: "0x01500017") == identity)
    }

    /// The same start with Debian's swtpm and with the front ends, in one run (the
    /// figure in the notes).
    @Test func startTimeNextToSwtpm() throws {
        let directory = TemporaryDirectory("gv-libvirt-time")
        let vault = directory.file("vault")
        try makeVault(vault)
        let bin = directory.file("bin")
        try installFrontEnds(into: bin, vault: vault)
        var figures: [String: [Double]] = [:]
        for (label, frontEnds) in [("swtpm", nil), ("guestvault", bin)] as [(String, String?)] {
            let daemon = LibvirtDaemon(root: directory.file("root-\(label)"), frontEnds: frontEnds)
            try daemon.start()
            defer { daemon.stop() }
            let uuid = UUID().uuidString.lowercased()
            try Self.domainXML(name: "t", uuid: uuid, secret: nil, serial: directory.file("serial-\(label).log"))
                .write(toFile: directory.file("t.xml"), atomically: true, encoding: .utf8)
            try daemon.virshOK(["define", directory.file("t.xml")])
            for _ in 0..<3 {
                figures[label, default: []].append(try Self.seconds { try daemon.virshOK(["start", "t"]) })
                try daemon.virshOK(["destroy", "t"])
            }
            let files = stateFiles(daemon.hostPath("/var/lib/libvirt/swtpm/\(uuid)/tpm2"))
            #expect(files.contains(label == "swtpm" ? "tpm2-00.permall" : "tpm2-00.guestvault"))
        }
        for (label, values) in figures.sorted(by: { $0.key < $1.key }) {
            print("virsh start with \(label): first (with swtpm_setup) \(String(format: "%.2f", values[0])) s, then \(values.dropFirst().map { String(format: "%.2f", $0) }.joined(separator: ", ")) s")
        }
    }
}
