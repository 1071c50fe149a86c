import Foundation
import GuestVaultTestSupport
import Testing

/// A VM that leaves a host and comes back to it (docs/LIBVIRT.md): two libvirt daemons on
/// 127.0.0.1, each with its own vault, the VM migrated live A → B → A → B. Once with
/// `--undefinesource` (libvirt removes the source's TPM state, so each arrival starts
/// from `swtpm_setup --overwrite` in a new directory) and once keeping the source's
/// definition (libvirt keeps the TPM state it had, so the VM returns to its older
/// container and the incoming state replaces what is in it), that time with a VM secret
/// on both hosts, so the state blobs travel encrypted with libvirt's migration key.
@Suite("libvirt: migrating back", .serialized)
struct LibvirtMigrateBackTests {
    @Test(arguments: [(undefineSource: true, secret: false), (undefineSource: false, secret: true)])
    func thereAndBackAgain(undefineSource: Bool, secret withSecret: Bool) throws {
        let directory = TemporaryDirectory("gv-libvirt-back")
        let (binA, binB) = try installTwoHosts(in: directory)
        let portA = UInt16.random(in: 13_000...15_500) * 2
        let portB = portA + 10
        let hostA = LibvirtDaemon(root: directory.file("a"), frontEnds: binA, listenPort: portA)
        let hostB = LibvirtDaemon(root: directory.file("b"), frontEnds: binB, listenPort: portB)
        try hostA.start()
        defer { hostA.stop() }
        try hostB.start()
        defer { hostB.stop() }

        // The same VM secret on both hosts, as libvirt needs for a VM with <encryption>.
        let secret = withSecret ? try LibvirtTests.defineSecret(hostA, in: directory) : nil
        if let secret {
            // LibvirtTests.defineSecret's value (a private secret cannot be read back).
            let value = Data("not a newline-terminated secret".utf8).base64EncodedString()
            let xml = "<secret ephemeral='no' private='yes'><uuid>\(secret)</uuid><description>vTPM</description></secret>"
            try xml.write(toFile: directory.file("secret-b.xml"), atomically: true, encoding: .utf8)
            try hostB.virshOK(["secret-define", directory.file("secret-b.xml")])
            try hostB.virshOK(["secret-set-value", secret, value])
        }
        let uuid = UUID().uuidString.lowercased()
        try LibvirtTests.domainXML(name: "back", uuid: uuid, secret: secret, serial: directory.file("serial.log"))
            .write(toFile: directory.file("dom.xml"), atomically: true, encoding: .utf8)
        try hostA.virshOK(["define", directory.file("dom.xml")])
        try hostA.virshOK(["start", "back"])
        try hostA.virshOK(["destroy", "back"])
        let stateA = hostA.hostPath("/var/lib/libvirt/swtpm/\(uuid)/tpm2")
        let stateB = hostB.hostPath("/var/lib/libvirt/swtpm/\(uuid)/tpm2")
        try writeTestNV(bin: binA, stateDirectory: stateA, index: "0x01500018", value: "travelling-nv")
        let identity = try tpmIdentity(bin: binA, stateDirectory: stateA, nvIndex: "0x01500018")
        try hostA.virshOK(["start", "back"])

        func migrate(from source: LibvirtDaemon, toPort port: UInt16) throws {
            var arguments = ["migrate", "--live", "--persistent"]
            if undefineSource { arguments.append("--undefinesource") }
            arguments += ["back", "qemu+tcp://127.0.0.1:\(port)/system", "--listen-address", "127.0.0.1",
                          "--migrateuri", "tcp://127.0.0.1:\(port + 1)"]
            try source.virshOK(arguments)
        }
        // A → B → A → B: every arrival runs, and every host keeps only sealed state.
        for (step, (source, port, arrival)) in [(hostA, portB, stateB), (hostB, portA, stateA), (hostA, portB, stateB)].enumerated() {
            try migrate(from: source, toPort: port)
            let running = try (step % 2 == 0 ? hostB : hostA).virshOK(["domstate", "back"])
            #expect(running.contains("running"), "step \(step): \(running)")
            #expect(onlySealed(arrival, plaintext: "travelling-nv"), "step \(step): \(stateFiles(arrival))")
        }
        try hostB.virshOK(["destroy", "back"])
        // With the VM secret, libvirt gave every swtpm a migration key.
        let log = try String(contentsOfFile: hostB.hostPath("/var/log/swtpm/libvirt/qemu/back-swtpm.log"), encoding: .utf8)
        #expect(log.contains("state blobs encrypted with the migration key") == withSecret)
        #expect(onlySealed(stateB, plaintext: "travelling-nv"))
        #expect(try tpmIdentity(bin: binB, stateDirectory: stateB, nvIndex: "0x01500018") == identity)
        if !undefineSource {
            // The container A kept holds the TPM as it left A the second time.
            #expect(onlySealed(stateA, plaintext: "travelling-nv"), "\(stateFiles(stateA))")
            #expect(try tpmIdentity(bin: binA, stateDirectory: stateA, nvIndex: "0x01500018") == identity)
        } else {
            #expect(stateFiles(stateA).isEmpty, "libvirt removes the state of an undefined source: \(stateFiles(stateA))")
        }
    }
}
