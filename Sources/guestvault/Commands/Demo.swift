import ArgumentParser
import Foundation
import GuestVaultCrypto
import GuestVaultTPM

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the whole flow on a temporary vault and print what each step did.",
        discussion: """
            Creates a root key in a temporary directory, derives the per-VM key-encryption
            key for a VM, wraps a fresh guest state protection key under it, seals a sample
            guest state file, reads it back, opens it, and shows that a changed byte is
            refused. Nothing outside the temporary directory is touched, and it is removed
            at the end unless --keep is given.
            """
    )

    @Option(name: .customLong("size-mib"), help: "Size of the sample guest state file, in MiB.")
    var sizeMiB: Int = 4

    @Flag(help: "Keep the temporary directory and print its path.")
    var keep = false

    @Flag(help: "Print the summary as JSON.")
    var json = false

    func validate() throws {
        guard (1...1024).contains(sizeMiB) else {
            throw ValidationError("--size-mib must be between 1 and 1024")
        }
    }

    func run() async throws {
        var steps: [(String, Duration, String)] = []
        let clock = ContinuousClock()
        func step<T>(_ name: String, _ body: () throws -> (T, String)) rethrows -> T {
            let start = clock.now
            let (value, detail) = try body()
            steps.append((name, clock.now - start, detail))
            return value
        }

        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("guestvault-demo-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false,
                                                attributes: [.posixPermissions: 0o700])
        defer { if !keep { try? FileManager.default.removeItem(at: directory) } }

        let vmID = UUID()
        let epoch: UInt32 = 1

        let root = try step("root key") { () throws -> (SecretBytes, String) in
            let key = try SecretBytes(randomCount: 32)
            return (key, "256-bit random root key held in memory (\(key))")
        }
        let kek = try step("per-VM KEK") { () throws -> (SecretBytes, String) in
            let kek = try KBKDF.counterHMACSHA256(
                key: root, label: Array("GuestVault KEK".utf8),
                context: DemoFormat.kekContext(vm: vmID, epoch: epoch), outputByteCount: 32)
            return (kek, "SP 800-108 HMAC-SHA256 for VM \(vmID.uuidString.lowercased()), epoch \(epoch)")
        }
        let (dek, wrappedDEK) = try step("guest state key") { () throws -> ((SecretBytes, [UInt8]), String) in
            let dek = try SecretBytes(randomCount: 32)
            let wrapped = try AESKeyWrap.wrapWithPadding(dek, kek: kek)
            return ((dek, wrapped), "random 256-bit DEK wrapped under the KEK (RFC 5649, \(wrapped.count) bytes)")
        }
        let sample = try step("sample state") { () throws -> ([UInt8], String) in
            let bytes = try SecureRandom.bytes(count: sizeMiB << 20)
            return (bytes, "\(sizeMiB) MiB of stand-in runtime state, SHA-256 \(hexString(try SHA256.hash(bytes).prefix(8)))…")
        }
        let aad = DemoFormat.associatedData(vm: vmID, entry: "vm.runtime", generation: 1)
        let sealedPath = directory.appendingPathComponent("vm.runtime.sealed")
        try step("seal") { () throws -> ((), String) in
            let nonce = try SecureRandom.bytes(count: AESGCM.nonceByteCount)
            let sealed = try AESGCM.seal(sample, key: dek, nonce: nonce, authenticating: aad)
            let file = Data(wrappedDEK.count.bigEndianBytes4 + wrappedDEK + nonce + sealed)
            guard FileManager.default.createFile(atPath: sealedPath.path, contents: file,
                                                 attributes: [.posixPermissions: 0o600]) else {
                throw ValidationError("could not write \(sealedPath.path)")
            }
            return ((), "AES-256-GCM, bound to VM, entry \"vm.runtime\" and generation 1; wrote \(file.count) bytes, mode 0600")
        }
        let file = try step("read back") { () throws -> ([UInt8], String) in
            let bytes = [UInt8](try Data(contentsOf: sealedPath))
            return (bytes, "read \(bytes.count) bytes")
        }
        try step("open") { () throws -> ((), String) in
            let opened = try DemoFormat.open(file, root: root, vm: vmID, epoch: epoch, aad: aad)
            guard opened == sample else { throw ValidationError("opened state differs from the sample") }
            return ((), "unwrapped the DEK with a re-derived KEK, opened and compared: identical")
        }
        try step("tamper check") { () throws -> ((), String) in
            var changed = file
            changed[changed.count / 2] ^= 0x01
            do {
                _ = try DemoFormat.open(changed, root: root, vm: vmID, epoch: epoch, aad: aad)
                throw ValidationError("a changed byte was not detected")
            } catch let error as CryptoError where error.code == .authenticationFailure {
                // expected
            }
            let otherVM = DemoFormat.associatedData(vm: UUID(), entry: "vm.runtime", generation: 1)
            do {
                _ = try DemoFormat.open(file, root: root, vm: vmID, epoch: epoch, aad: otherVM)
                throw ValidationError("state opened under another VM's binding")
            } catch let error as CryptoError where error.code == .authenticationFailure {
                // expected
            }
            return ((), "a flipped bit and another VM's binding were both refused")
        }
        _ = dek

        if json {
            struct Step: Encodable { let step: String; let ms: Double; let detail: String }
            struct Summary: Encodable { let vm: String; let libtpms: String; let steps: [Step] }
            let summary = Summary(vm: vmID.uuidString.lowercased(), libtpms: LibTPMS.version,
                                  steps: steps.map { Step(step: $0.0, ms: ($0.1.milliseconds * 1000).rounded() / 1000, detail: $0.2) })
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
        } else {
            print("GuestVault \(GuestVaultVersion.string) demo (libtpms \(LibTPMS.version))")
            print("VM \(vmID.uuidString.lowercased()), working in \(directory.path)")
            for (name, duration, detail) in steps {
                print("  \(name.padding(toLength: 16, withPad: " ", startingAt: 0)) \(String(format: "%9.3f ms", duration.milliseconds))  \(detail)")
            }
            if keep { print("Kept \(directory.path)") }
            print("Demo finished: sealed, opened and verified \(sizeMiB) MiB of guest state.")
        }
    }
}

/// The demo's small stand-in file layout, until the container format exists:
/// wrapped-DEK length (u32 big-endian), wrapped DEK, nonce, ciphertext, tag.
enum DemoFormat {
    static func kekContext(vm: UUID, epoch: UInt32) -> [UInt8] {
        vm.bytes + epoch.bigEndianBytes
    }

    static func associatedData(vm: UUID, entry: String, generation: UInt64) -> [UInt8] {
        Array("GuestVault demo v1".utf8) + vm.bytes + Array(entry.utf8) + generation.bigEndianBytes
    }

    static func open(_ file: [UInt8], root: SecretBytes, vm: UUID, epoch: UInt32, aad: [UInt8]) throws -> [UInt8] {
        guard file.count >= 4 else { throw ValidationError("sealed file is truncated") }
        let wrappedCount = Int(file[0]) << 24 | Int(file[1]) << 16 | Int(file[2]) << 8 | Int(file[3])
        guard wrappedCount <= 64, file.count >= 4 + wrappedCount + AESGCM.nonceByteCount + AESGCM.tagByteCount else {
            throw ValidationError("sealed file is truncated")
        }
        let wrapped = Array(file[4..<(4 + wrappedCount)])
        let nonce = Array(file[(4 + wrappedCount)..<(4 + wrappedCount + 12)])
        let sealed = Array(file[(4 + wrappedCount + 12)...])
        let kek = try KBKDF.counterHMACSHA256(key: root, label: Array("GuestVault KEK".utf8),
                                              context: kekContext(vm: vm, epoch: epoch), outputByteCount: 32)
        let dek = try AESKeyWrap.unwrapWithPadding(wrapped, kek: kek)
        return try AESGCM.open(sealed, key: dek, nonce: nonce, authenticating: aad)
    }
}

extension UUID {
    var bytes: [UInt8] {
        withUnsafeBytes(of: uuid) { Array($0) }
    }
}

extension FixedWidthInteger {
    var bigEndianBytes: [UInt8] {
        withUnsafeBytes(of: self.bigEndian) { Array($0) }
    }
}

extension Int {
    var bigEndianBytes4: [UInt8] { UInt32(truncatingIfNeeded: self).bigEndianBytes }
}

extension Duration {
    var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }
}
