import ArgumentParser
import Dispatch
import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultTPM
import GuestVaultTPMContainer
import GuestVaultTransfer
import GuestVaultVM
import Synchronization

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the whole flow on temporary vaults and print what each step did and how long it took.",
        discussion: """
            Makes two file vaults in a temporary directory (two "hosts"), creates a VM's
            container with a manufactured vTPM (EKs and certificates from the host CA), runs
            TPM commands on it (PCR extend, NV write — each committed durably), seals a
            runtime-state file as a parallel stream, sends the container over loopback to the
            second vault with the encrypted transfer, opens it there and checks the NV
            contents and the data. Nothing outside the temporary directory is touched; it is
            removed at the end unless --keep is given.
            """
    )

    @Option(name: .customLong("size-mib"), help: "Size of the sample runtime state, in MiB (1 to 4096).")
    var size: DemoSizeMiB = DemoSizeMiB(checked: 64)

    var sizeMiB: Int { size.value }

    @Flag(help: "Keep the temporary directory and print its path.")
    var keep = false

    @Flag(help: "Print the summary as JSON.")
    var json = false

    struct Step: Encodable { let step: String; let ms: Double; let detail: String }

    func run() throws {
        var steps: [Step] = []
        func step<T>(_ name: String, _ body: () throws -> (T, String)) throws -> T {
            let start = DispatchTime.now().uptimeNanoseconds
            let (value, detail) = try body()
            let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
            steps.append(Step(step: name, ms: (ms * 1000).rounded() / 1000, detail: detail))
            if !json { print("  \(name.padding(toLength: 22, withPad: " ", startingAt: 0)) \(String(format: "%9.1f ms", ms))  \(detail)") }
            return value
        }

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("guestvault-demo-\(UUID().uuidString.prefix(8))").path
        try FileSystem.createDirectory(directory)
        defer { if !keep { try? FileManager.default.removeItem(atPath: directory) } }
        let vm = UUID()
        let source = FileSystem.join(directory, "host-a"), destination = FileSystem.join(directory, "host-b")
        try FileSystem.createDirectory(source)
        try FileSystem.createDirectory(destination)
        let statePath = FileSystem.join(source, "vm.state"), receivedPath = FileSystem.join(destination, "vm.state")
        if !json {
            print("GuestVault \(GuestVaultVersion.string) demo (libtpms \(LibTPMS.version)), VM \(vm.uuidString.lowercased())")
            print("working in \(directory)")
        }

        let (vaultA, vaultB) = try step("vaults") { () throws -> ((KeyVault, KeyVault), String) in
            let a = try KeyVault.createFileVault(at: FileSystem.join(source, "vault"))
            let b = try KeyVault.createFileVault(at: FileSystem.join(destination, "vault"))
            return ((a, b), "two file vaults (0700, root keys 0600): host A \(hexString(a.rootKeyID.prefix(4)))…, host B \(hexString(b.rootKeyID.prefix(4)))…")
        }
        try step("container + vTPM") { () throws -> ((), String) in
            let container = try GuestStateContainer.create(at: statePath, vm: vm, vault: vaultA)
            let issue = try EKCertificates.issuer(vault: vaultA, vm: vm)
            let report = try TPMManufacturer.manufacture(into: container, options: .init(createEndorsementKeys: true, issueCertificate: issue))
            return ((), "sealed container with a TPM 2.0: RSA-2048 and ECC P-256 EKs, certificates (\(report.rsaCertificateBytes ?? 0) + \(report.eccCertificateBytes ?? 0) bytes) from host A's CA")
        }
        let nvData = Array("guest secret sealed by GuestVault".utf8)
        let measurement = try SHA256.hash(Array("kernel and initrd".utf8))
        let pcr = try step("TPM commands") { () throws -> ([UInt8], String) in
            let container = try GuestStateContainer.open(at: statePath, access: .readWrite)
            try container.unlock(with: UnlockCredentials(vault: vaultA))
            let storage = ContainerTPMStorage(container: container)
            let engine = try TPMEngine.start(storage: storage)
            defer { try? engine.stop() }
            try engine.startup()
            try engine.pcrExtend(8, sha256: measurement)
            try engine.nvDefineSpace(0x0150_0001, size: nvData.count, attributes: 0x0006_0006)
            try engine.nvWrite(0x0150_0001, nvData)
            let value = try engine.pcrRead(8)
            try engine.shutdown()
            try engine.stop()
            try storage.flush()
            return (value, "Startup, PCR_Extend(8), NV_DefineSpace + NV_Write: \(storage.commits) durable commits; PCR 8 = \(hexString(value.prefix(6)))…")
        }
        _ = pcr
        let runtimeDigest = try step("seal runtime state") { () throws -> ([UInt8], String) in
            let container = try GuestStateContainer.open(at: statePath, access: .readWrite)
            try container.unlock(with: UnlockCredentials(vault: vaultA))
            var hasher = try SHA256()
            var produced = 0
            let total = sizeMiB << 20
            var block = try SecureRandom.bytes(count: 1 << 20)
            try container.writeStream(EntryName.vmRuntime) { buffer in
                guard produced < total else { return 0 }
                let n = min(buffer.count, total - produced, block.count)
                block[0] ^= UInt8(truncatingIfNeeded: produced >> 20)
                buffer.replaceSubrange(0..<n, with: block[0..<n])
                try hasher.update(Array(block[0..<n]))
                produced += n
                return n
            }
            let generation = try container.commit()
            try container.flush()
            return (try hasher.finalize(), "\(sizeMiB) MiB vm.runtime sealed as 256 KiB AES-256-GCM chunks on \(ProcessInfo.processInfo.activeProcessorCount) cores; generation \(generation)")
        }
        let report = try step("send to host B") { () throws -> (ContainerTransfer.Report, String) in
            let listener = try StreamSocket.listen(.tcp(host: "127.0.0.1", port: 0))
            let port = listener.localPort!
            let recipient = try vaultB.recipientKey()
            let senderKey = try vaultA.recipientKey()
            let received = Mutex<Result<ContainerTransfer.Report, any Error>?>(nil)
            let done = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                let result = Result<ContainerTransfer.Report, any Error> {
                    let connection = try listener.accept()
                    return try ContainerTransfer.receive(over: connection, into: receivedPath, vault: vaultB, authentication: .asRecipient(recipient, accepting: .only([senderKey.publicKey])))
                }
                received.withLock { $0 = result }
                done.signal()
            }
            let socket = try StreamSocket.connect(.tcp(host: "127.0.0.1", port: port))
            let sent = try ContainerTransfer.send(containerAt: statePath, vault: vaultA, over: socket, authentication: .toRecipient(recipient.publicKey, sender: senderKey))
            done.wait()
            let report = try received.withLock { try $0!.get() }
            _ = sent
            let rate = report.seconds > 0 ? Double(report.bytes) / report.seconds / 1e6 : 0
            return (report, "\(formatBytes(report.bytes)) over loopback, X25519 + AES-256-GCM frames, \(String(format: "%.0f", rate)) MB/s; host B wrapped the key for its vault, generation \(report.generation)")
        }
        _ = report
        try step("open on host B") { () throws -> ((), String) in
            let container = try GuestStateContainer.open(at: receivedPath, access: .readWrite)
            let slot = try container.unlock(with: UnlockCredentials(vault: vaultB))
            var hasher = try SHA256()
            try container.readStream(EntryName.vmRuntime) { try hasher.update($0) }
            guard try hasher.finalize() == runtimeDigest else { throw CLIError(.checkFailed, "vm.runtime differs after the transfer") }
            let storage = ContainerTPMStorage(container: container)
            let engine = try TPMEngine.start(storage: storage)
            defer { try? engine.stop() }
            try engine.startup()
            let read = try engine.nvRead(0x0150_0001, size: nvData.count)
            guard read == nvData else { throw CLIError(.checkFailed, "NV contents differ after the transfer") }
            try engine.stop()
            return ((), "unlocked with host B's vault (slot \(slot)); NV 0x01500001 reads back the same \(nvData.count) bytes; vm.runtime SHA-256 matches")
        }
        try step("tamper check") { () throws -> ((), String) in
            var bytes = try FileSystem.readFile(receivedPath, limit: 1 << 40)
            let tampered = FileSystem.join(destination, "tampered.state")
            bytes[bytes.count / 2] ^= 0x01
            try FileSystem.writeAtomically(bytes, to: tampered)
            let refused: Bool
            do {
                let container = try GuestStateContainer.open(at: tampered)
                try container.unlock(with: UnlockCredentials(vault: vaultB), allowRollback: true)
                try container.readStream(EntryName.vmRuntime) { _ in }
                refused = false
            } catch {
                refused = true
            }
            guard refused else { throw CLIError(.checkFailed, "a flipped bit was not detected") }
            return ((), "a copy with one flipped bit is refused")
        }

        if json {
            struct Summary: Encodable { let vm: String; let libtpms: String; let steps: [Step] }
            try printJSON(Summary(vm: vm.uuidString.lowercased(), libtpms: LibTPMS.version, steps: steps))
        } else {
            if keep { print("Kept \(directory)") }
            print(String(format: "Demo finished in %.1f ms: a VM's vTPM and %d MiB of runtime state sealed, moved to another vault, opened and verified.",
                         steps.reduce(0) { $0 + $1.ms }, sizeMiB))
        }
    }
}
