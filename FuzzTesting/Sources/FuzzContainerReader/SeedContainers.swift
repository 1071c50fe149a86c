import Foundation
import FuzzSupport
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState

/// Small containers made with the fixed vault (root key 0x30...0x4f, the key of
/// Vectors/formats/containers), each cut after its last non-zero byte: the seeds that
/// let the fuzzer reach unlocking and reading from the first input. A few KB each
/// (most of it the zero padding of the 4 KiB header area).
enum SeedContainers {
    static let vm = UUID(uuidString: "6f1d2c3b-4a59-4e68-8d7c-0b1a2f3e4d5c")!

    static func write(into directory: String) throws {
        let vault = FixedVault.containers
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)

        try make("seed-empty.state", into: directory, vault: vault) { _ in }

        try make("seed-blobs.state", into: directory, vault: vault) { c in
            try c.write("tpm.permanent", pattern(200, 7))
            try c.write("vm.id", pattern(16, 13))
            try c.commit()
        }

        try make("seed-stream.state", into: directory, vault: vault) { c in
            try c.write("uefi.nvram", pattern(64, 3))
            try writeStream(c, "vm.runtime", pattern(300, 5))
            try c.commit()
        }

        try make("seed-empty-stream.state", into: directory, vault: vault) { c in
            try writeStream(c, "vm.runtime", [])
            try c.commit()
        }

        try make("seed-history.state", into: directory, vault: vault) { c in
            try c.write("a", pattern(10, 1))
            try c.commit()
            try c.write("b", pattern(20, 2))
            try c.commit()
            try c.remove("a")
            try c.commit()
            try c.write("a", pattern(30, 3))
            try c.commit()
        }

        // An append that never committed: a stream record after the last commit.
        try make("seed-tail.state", into: directory, vault: vault) { c in
            try c.write("tpm.permanent", pattern(40, 9))
            try c.commit()
            try writeStream(c, "vm.runtime", pattern(100, 11))
            c.discardPendingChanges()
        }

        try make("seed-slots.state", into: directory, vault: vault, extraSlots: [
            { dek in
                let key = try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: (0x40...0x5f).map { UInt8($0) }))
                return try .wrapForRecipient(dek, recipient: key.publicKey, vm: vm)
            },
            { dek in
                try .wrapForPassphrase(dek, passphrase: SecretBytes(copying: Array("correct horse battery staple".utf8)),
                                       parameters: .init(n: 1 << 10, r: 8, p: 1))
            },
        ]) { c in
            try c.write("tpm.permanent", pattern(32, 1))
            try c.commit()
        }
    }

    static func make(
        _ name: String, into directory: String, vault: KeyVault,
        extraSlots: [(SecretBytes) throws -> KeyProtector] = [], _ body: (GuestStateContainer) throws -> Void
    ) throws {
        let path = FuzzWorkspace.file(name)
        do {
            let container = try GuestStateContainer.create(at: path, vm: vm, vault: vault, extraSlots: extraSlots)
            try body(container)
            try container.flush()
        }
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        let end = (bytes.lastIndex { $0 != 0 } ?? -1) + 1
        bytes.removeSubrange(end...)
        try Data(bytes).write(to: URL(fileURLWithPath: "\(directory)/\(name)"))
        try FileManager.default.removeItem(atPath: path)
        print("seed: \(directory)/\(name): \(bytes.count) bytes")
    }

    static func writeStream(_ container: GuestStateContainer, _ name: String, _ bytes: [UInt8]) throws {
        var sent = false
        try container.writeStream(name) { buffer in
            guard !sent else { return 0 }
            sent = true
            buffer.replaceSubrange(0..<bytes.count, with: bytes)
            return bytes.count
        }
    }

    static func pattern(_ count: Int, _ step: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0) &* step &+ 1 }
    }
}
