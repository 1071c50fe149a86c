import Foundation
import Glibc
import GuestVaultSystem
import Testing

/// Live migration through QEMU: the source QEMU migrates to a file, the destination
/// QEMU loads it; the vTPM state goes through GET_STATEBLOB / SET_STATEBLOB in swtpm's
/// envelope. Between two `guestvault serve` processes the sealed container follows with
/// `guestvault send` / `receive`; and a VM moves between swtpm and `guestvault serve` in
/// both directions. Each side's PCRs and NV are read back afterwards and compared.
@Suite(.enabled(if: Peers.qemu && Peers.tpm2Tools, "needs qemu-system-x86, seabios and tpm2-tools"))
struct LiveMigrationTests {
    enum Kind: String, CustomTestStringConvertible, Sendable { case guestvault, swtpm; var testDescription: String { rawValue } }

    /// One host's vTPM: a guestvault container or an swtpm state directory.
    final class Host {
        let kind: Kind
        let dir: TemporaryDirectory
        let name: String
        var socket: String { dir.file("\(name).ctrl") }
        var vault: String { dir.file("\(name)-vault") }
        var state: String { dir.file("\(name).state") }
        var swtpmDir: String { dir.file("\(name)-swtpm") }
        var process: Process?
        /// Options for the server QEMU talks to (the migration key).
        var serveArguments: [String] = []

        init(_ kind: Kind, _ name: String, dir: TemporaryDirectory) {
            self.kind = kind
            self.name = name
            self.dir = dir
        }

        /// Serves the control socket for QEMU.
        func serveForQEMU() throws {
            let p = Process()
            switch kind {
            case .guestvault:
                p.executableURL = URL(fileURLWithPath: GuestVaultBinary.path)
                p.arguments = ["serve", "--vault", vault, state, "--ctrl", "unix:\(socket)"] + serveArguments
            case .swtpm:
                p.executableURL = URL(fileURLWithPath: Run.which("swtpm")!)
                p.arguments = ["socket", "--tpm2", "--tpmstate", "dir=\(swtpmDir)", "--ctrl", "type=unixio,path=\(socket)"] + serveArguments
            }
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            process = p
            waitUntil { FileManager.default.fileExists(atPath: socket) }
        }

        /// Stores the volatile state and stops the server.
        func stop() throws {
            guard let p = process else { return }
            switch kind {
            case .guestvault:
                kill(p.processIdentifier, SIGTERM)
            case .swtpm:
                let ioctl = Run.which("swtpm_ioctl")!
                try Run.program(ioctl, ["--unix", socket, "-v"])
                try Run.program(ioctl, ["--unix", socket, "-s"])
            }
            let deadline = Date().addingTimeInterval(20)
            while p.isRunning && Date() < deadline { usleep(10_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
            process = nil
        }

        /// Runs tpm2-tools against the stored state on a TCP port (resuming the volatile state).
        func read(_ body: ([String: String]) throws -> Void) throws {
            switch kind {
            case .guestvault:
                let server = try ServedTPM(vault: vault, state: state)
                try body(server.tcti)
                _ = server.terminate()
            case .swtpm:
                // A random port may be taken by another test's server: then this swtpm
                // exits at once (bind fails) and tpm2-tools would talk to the other
                // server. Try again on another port until our own swtpm is the one
                // listening (it is still running once its control port answers).
                for attempt in 1...8 {
                    let port = UInt16.random(in: 10000...32000) & ~1 // below the ephemeral range
                    let p = Process()
                    p.executableURL = URL(fileURLWithPath: Run.which("swtpm")!)
                    p.arguments = ["socket", "--tpm2", "--tpmstate", "dir=\(swtpmDir)", "--server", "type=tcp,port=\(port),bindaddr=127.0.0.1",
                                   "--ctrl", "type=tcp,port=\(port + 1),bindaddr=127.0.0.1", "--flags", "not-need-init,startup-clear"]
                    p.standardError = FileHandle.nullDevice
                    try p.run()
                    defer { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
                    let answered = waitUntil(attempts: 3000) {
                        !p.isRunning || (try? StreamSocket.connect(.tcp(host: "127.0.0.1", port: port + 1))) != nil
                    }
                    guard answered, p.isRunning else {
                        if attempt == 8 { throw POSIXError(.EADDRINUSE) }
                        continue
                    }
                    try body(["TPM2TOOLS_TCTI": "swtpm:host=127.0.0.1,port=\(port)"])
                    return
                }
            }
        }
    }

    final class QEMU {
        let process = Process()
        let monitorPath: String

        init(tpmSocket: String, monitor: String, log: String, incoming: String? = nil) throws {
            monitorPath = monitor
            process.executableURL = URL(fileURLWithPath: Run.which("qemu-system-x86_64")!)
            process.arguments = [
                "-machine", "q35,accel=tcg", "-m", "128", "-nodefaults", "-display", "none", "-no-reboot",
                "-chardev", "socket,id=chrtpm,path=\(tpmSocket)", "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
                "-device", "tpm-tis,tpmdev=tpm0",
                "-chardev", "file,id=seabios,path=\(log)", "-device", "isa-debugcon,iobase=0x402,chardev=seabios",
                "-monitor", "unix:\(monitor),server=on,wait=off",
            ] + (incoming.map { ["-incoming", $0] } ?? [])
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            waitUntil { FileManager.default.fileExists(atPath: monitor) }
        }

        /// Sends one HMP command and returns what the monitor printed (up to the prompt
        /// that follows the command's output).
        func hmp(_ command: String) throws -> String {
            let socket = try StreamSocket.connect(.unix(path: monitorPath))
            defer { socket.close() }
            var text = ""
            func readUntil(prompts: Int) throws {
                let deadline = Date().addingTimeInterval(10)
                while Date() < deadline && text.components(separatedBy: "(qemu)").count - 1 < prompts {
                    if try StreamSocket.poll([socket.descriptor], timeout: 100).isEmpty { continue }
                    let bytes = try socket.receive()
                    if bytes.isEmpty { return }
                    text += String(decoding: bytes, as: UTF8.self)
                }
            }
            try readUntil(prompts: 1)
            try socket.send(Array((command + "\n").utf8))
            try readUntil(prompts: 2)
            return text
        }

        /// Ends QEMU without a TPM SHUTDOWN (as a host would lose it), so the TPM keeps
        /// its volatile state for the server to store.
        func kill() {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    static func waitFor(_ text: String, inFile path: String, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let content = try? String(contentsOfFile: path, encoding: .utf8), content.contains(text) { return true }
            usleep(100_000)
        }
        return false
    }

    /// The whole of an NV index (its size from tpm2_nvreadpublic's `size:` line).
    static func readNV(_ index: String, environment: [String: String]) throws -> [UInt8] {
        let info = try Run.program(Run.which("tpm2_nvreadpublic")!, [index], environment: environment)
        let sizeLine = info.text.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("size:") }
        let size = sizeLine.flatMap { Int($0.split(separator: ":").last!.trimmingCharacters(in: .whitespaces)) } ?? 0
        guard size > 0 else { return [] }
        let read = try Run.program(Run.which("tpm2_nvread")!, [index, "-C", "o", "-s", "\(size)"], environment: environment)
        return read.status == 0 ? [UInt8](read.stdout) : []
    }

    @Test(arguments: [(Kind.guestvault, Kind.guestvault), (.swtpm, .guestvault), (.guestvault, .swtpm)]
          .filter { $0.0 == .guestvault && $0.1 == .guestvault || Run.which("swtpm") != nil })
    func migrateAndCompare(_ source: Kind, _ destination: Kind) throws {
        let dir = TemporaryDirectory("migrate")
        let from = Host(source, "source", dir: dir), to = Host(destination, "destination", dir: dir)
        let vm = UUID().uuidString
        let nvData = Array("migrated with the VM".utf8)
        var ekCertificates: [[UInt8]] = []
        // Between guestvault and swtpm both sides hold the same swtpm migration key (as
        // libvirt passes one); between two guestvaults the blobs are sealed under the
        // container's key with no option at all.
        if source != destination || source == .swtpm {
            let key = dir.file("migration.key")
            try Data(String(repeating: "5a", count: 32).utf8).write(to: URL(fileURLWithPath: key))
            from.serveArguments = ["--migration-key", "file=\(key),mode=aes-256-cbc"]
            to.serveArguments = from.serveArguments
        }

        // Source: a TPM with an NV index written before the VM starts.
        switch source {
        case .guestvault:
            #expect(try Run.guestvault(["vault", "init", "--vault", from.vault]).status == 0)
            // With EKs and their certificates (NV 0x01C00002 RSA, 0x01C0000A ECC P-256).
            let created = try Run.guestvault(["create", "--vault", from.vault, "--vm", vm, "--tpm", "--ek", from.state])
            #expect(created.status == 0, "\(created.stderr)")
        case .swtpm:
            try FileManager.default.createDirectory(atPath: from.swtpmDir, withIntermediateDirectories: true)
            let setup = try Run.program(Run.which("swtpm_setup")!, ["--tpm2", "--tpm-state", from.swtpmDir, "--overwrite"])
            #expect(setup.status == 0, "\(setup.stderr)")
        }
        try from.read { tcti in
            let define = try Run.program(Run.which("tpm2_nvdefine")!, ["0x1500020", "-C", "o", "-s", "\(nvData.count)", "-a", "ownerread|ownerwrite"], environment: tcti)
            #expect(define.status == 0, "tpm2_nvdefine: \(define.stderr)")
            let write = try Run.program(Run.which("tpm2_nvwrite")!, ["0x1500020", "-C", "o", "-i", "-"], environment: tcti, input: Data(nvData))
            #expect(write.status == 0, "tpm2_nvwrite: \(write.stderr)")
            guard source == .guestvault else { return }
            for index in ["0x01c00002", "0x01c0000a"] {
                let certificate = try Self.readNV(index, environment: tcti)
                #expect(certificate.count > 300, "EK certificate at \(index): \(certificate.count) bytes")
                ekCertificates.append(certificate)
            }
        }

        // The source VM boots to "No bootable device", then migrates to a file.
        try from.serveForQEMU()
        let sourceQEMU = try QEMU(tpmSocket: from.socket, monitor: dir.file("source.monitor"), log: dir.file("source.log"))
        #expect(Self.waitFor("No bootable device", inFile: dir.file("source.log"), seconds: 120))
        let stream = dir.file("migration.bin")
        _ = try sourceQEMU.hmp("stop")
        _ = try sourceQEMU.hmp("migrate \"exec:cat > \(stream)\"")
        var completed = false
        for _ in 0..<200 {
            if try sourceQEMU.hmp("info migrate").contains("Migration status: completed") { completed = true; break }
            usleep(100_000)
        }
        #expect(completed, "the source migration completed")
        sourceQEMU.kill()
        // The migration stream holds the TPM's state only encrypted: not the NV value.
        let streamBytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: stream)))
        #expect(!streamBytes.isEmpty)
        #expect(MigrationBlobTests.containsAnyRun(of: nvData, in: streamBytes, window: nvData.count) == false,
                "the NV value is in the migration stream in plaintext")
        // Nor any 32-byte run of the EK certificates (sealed, or swtpm's migration key).
        #expect(ekCertificates.count == (source == .guestvault ? 2 : 0))
        for certificate in ekCertificates {
            #expect(MigrationBlobTests.containsAnyRun(of: certificate, in: streamBytes) == false,
                    "an EK certificate is in the migration stream in plaintext")
        }

        // The destination: its TPM (the container follows with send/receive between two
        // GuestVault hosts; a fresh TPM otherwise), then QEMU loads the stream.
        switch destination {
        case .guestvault:
            #expect(try Run.guestvault(["vault", "init", "--vault", to.vault]).status == 0)
            if source == .guestvault {
                let recipient = try Run.guestvault(["vault", "recipient", "--vault", to.vault]).text.trimmingCharacters(in: .whitespacesAndNewlines)
                let senderKey = try Run.guestvault(["vault", "recipient", "--vault", from.vault]).text.trimmingCharacters(in: .whitespacesAndNewlines)
                let listen = "unix:\(dir.file("transfer.sock"))"
                let receiver = Process()
                receiver.executableURL = URL(fileURLWithPath: GuestVaultBinary.path)
                receiver.arguments = ["receive", "--vault", to.vault, "--listen", listen, "--from", senderKey, to.state]
                try receiver.run()
                waitUntil { FileManager.default.fileExists(atPath: dir.file("transfer.sock")) }
                let sent = try Run.guestvault(["send", "--vault", from.vault, from.state, "--to", listen, "--recipient", recipient])
                #expect(sent.status == 0, "\(sent.stderr)")
                receiver.waitUntilExit()
                #expect(receiver.terminationStatus == 0)
            } else {
                #expect(try Run.guestvault(["create", "--vault", to.vault, "--vm", vm, "--tpm", to.state]).status == 0)
            }
        case .swtpm:
            try FileManager.default.createDirectory(atPath: to.swtpmDir, withIntermediateDirectories: true)
            #expect(try Run.program(Run.which("swtpm_setup")!, ["--tpm2", "--tpm-state", to.swtpmDir, "--overwrite"]).status == 0)
        }
        try to.serveForQEMU()
        let destinationQEMU = try QEMU(tpmSocket: to.socket, monitor: dir.file("destination.monitor"), log: dir.file("destination.log"),
                                       incoming: "exec:cat \(stream)")
        var loaded = false
        for _ in 0..<300 {
            let status = try destinationQEMU.hmp("info status")
            if status.contains("VM status") && !status.contains("inmigrate") { loaded = true; break }
            usleep(100_000)
        }
        #expect(loaded, "the destination loaded the migration stream")
        destinationQEMU.kill()

        try from.stop()
        try to.stop()
        var sourcePCRs = "", destinationPCRs = ""
        var sourceNV = Data(), destinationNV = Data()
        var nvErrors = ""
        try from.read { tcti in
            sourcePCRs = try Run.program(Run.which("tpm2_pcrread")!, ["sha256:0,1,2,3,4,5,6,7"], environment: tcti).text
            let read = try Run.program(Run.which("tpm2_nvread")!, ["0x1500020", "-C", "o", "-s", "\(nvData.count)"], environment: tcti)
            sourceNV = read.stdout
            nvErrors += "source (\(source)): status \(read.status) \(read.stderr)\n"
        }
        try to.read { tcti in
            destinationPCRs = try Run.program(Run.which("tpm2_pcrread")!, ["sha256:0,1,2,3,4,5,6,7"], environment: tcti).text
            let read = try Run.program(Run.which("tpm2_nvread")!, ["0x1500020", "-C", "o", "-s", "\(nvData.count)"], environment: tcti)
            destinationNV = read.stdout
            nvErrors += "destination (\(destination)): status \(read.status) \(read.stderr)\n"
        }
        #expect(!sourcePCRs.isEmpty && sourcePCRs == destinationPCRs, "PCRs on both sides:\n\(sourcePCRs)\n\(destinationPCRs)")
        #expect(!sourcePCRs.contains("0 : 0x0000000000000000000000000000000000000000000000000000000000000000"))
        #expect(sourceNV == Data(nvData) && destinationNV == Data(nvData), "NV reads:\n\(nvErrors)")
        print("migration \(source) -> \(destination): PCRs 0-7 and NV 0x1500020 identical on both sides")
    }
}
