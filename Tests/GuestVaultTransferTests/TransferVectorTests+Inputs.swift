import GuestVaultCore
import Dispatch
import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultTransfer
import GuestVaultTransferTesting
import Synchronization
import Testing

extension TransferVectorTests {
    // MARK: Fixed inputs

    struct Inputs {
        let mode: String
        let sourceRoot: SecretBytes
        let receiverRoot: SecretBytes
        let recipient: X25519.PrivateKey?
        let senderKey: X25519.PrivateKey?
        let psk: SecretBytes?
        let sender: FixedHandshake
        let receiver: FixedHandshake

        var senderAuthentication: TransferAuthentication {
            if let recipient { .toRecipient(recipient.publicKey, sender: senderKey!) } else { .presharedKey(psk!) }
        }
        var receiverAuthentication: TransferAuthentication {
            if let recipient { .asRecipient(recipient, accepting: .only([senderKey!.publicKey])) } else { .presharedKey(psk!) }
        }

        /// The values the vector files were written with.
        static func fixed(_ mode: String, sourceRoot: [UInt8]) throws -> Inputs {
            Inputs(
                mode: mode, sourceRoot: SecretBytes(copying: sourceRoot), receiverRoot: SecretBytes(copying: sequence(from: 0x50)),
                recipient: mode == "recipient" ? try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: sequence(from: 0x00))) : nil,
                senderKey: mode == "recipient" ? try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: sequence(from: 0x20))) : nil,
                psk: mode == "psk" ? SecretBytes(copying: sequence(from: 0x70)) : nil,
                sender: FixedHandshake(ephemeral: try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: sequence(from: 0x90))),
                                       random: sequence(from: 0xb0)),
                receiver: FixedHandshake(ephemeral: try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: sequence(from: 0xd0))),
                                         random: sequence(from: 0xf0)))
        }

        /// The values a vector file states.
        init(_ v: TransferVector) throws {
            func hex(_ text: String?) throws -> [UInt8] { try #require(text.flatMap { bytes(fromHex: $0) }) }
            mode = v.authentication.mode
            sourceRoot = SecretBytes(copying: try hex(v.container.rootKey))
            receiverRoot = SecretBytes(copying: try hex(v.receiverCommit.vaultRootKey))
            recipient = v.authentication.mode == "recipient"
                ? try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: try hex(v.authentication.recipientPrivate))) : nil
            senderKey = v.authentication.mode == "recipient"
                ? try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: try hex(v.authentication.senderPrivate))) : nil
            psk = v.authentication.mode == "psk" ? SecretBytes(copying: try hex(v.authentication.psk)) : nil
            sender = FixedHandshake(ephemeral: try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: try hex(v.sender.ephemeralPrivate))),
                                    random: try hex(v.sender.random))
            receiver = FixedHandshake(ephemeral: try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: try hex(v.receiver.ephemeralPrivate))),
                                      random: try hex(v.receiver.random))
        }

        private init(mode: String, sourceRoot: SecretBytes, receiverRoot: SecretBytes, recipient: X25519.PrivateKey?,
                     senderKey: X25519.PrivateKey?, psk: SecretBytes?, sender: FixedHandshake, receiver: FixedHandshake) {
            self.senderKey = senderKey
            self.mode = mode
            self.sourceRoot = sourceRoot
            self.receiverRoot = receiverRoot
            self.recipient = recipient
            self.psk = psk
            self.sender = sender
            self.receiver = receiver
        }
    }

    /// A source vault holding the container's root key, a copy of the container, and a
    /// receiving vault, in a temporary directory.
    struct Fixture {
        let dir = TemporaryDirectory("transfer-vector")
        let sourceVault: KeyVault
        let receiverVault: KeyVault
        let sourcePath: String
        let source: TransferSource
        var destination: String { dir.file("out/received.state") }

        init(_ inputs: Inputs, containerFile: String = "containers/basic.state") throws {
            sourceVault = try KeyVault.createFileVault(at: dir.file("source-vault"), importing: inputs.sourceRoot)
            receiverVault = try KeyVault.createFileVault(at: dir.file("receiver-vault"), importing: inputs.receiverRoot)
            sourcePath = dir.file("source.state")
            try FileSystem.writeAtomically(Array(try Data(contentsOf: formats.appendingPathComponent(containerFile))), to: sourcePath)
            try FileManager.default.createDirectory(atPath: dir.file("out"), withIntermediateDirectories: false)
            source = try TransferSource(containerAt: sourcePath, vault: sourceVault)
        }
    }

    static func load(_ mode: String) throws -> TransferVector {
        try JSONDecoder().decode(TransferVector.self, from: Data(contentsOf: formats.appendingPathComponent("transfer/transcript-\(mode).json")))
    }

    static func containerManifest() throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: formats.appendingPathComponent("containers/containers.json"))) as? [String: Any])
    }

    static func typeName(_ type: FrameType) -> String {
        switch type {
        case .manifest: "MANIFEST"
        case .key: "KEY"
        case .data: "DATA"
        case .final: "FINAL"
        case .ack: "ACK"
        case .done: "DONE"
        case .error: "ERROR"
        }
    }
}
