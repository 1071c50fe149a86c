import Foundation

/// The JSON of Vectors/formats/transfer/transcript-*.json (docs/TRANSFER.md §8).
struct TransferVector: Codable {
    struct Container: Codable {
        /// Relative to Vectors/formats.
        let file: String
        let length: UInt64
        let sha256: String
        /// The source vault's root key: it opens the container's vault slot.
        let rootKey: String
        let vm: String
        let containerID: String
        let generation: UInt64
        /// The container's DEK: what the KEY frame carries.
        let dek: String
    }

    struct Authentication: Codable {
        /// "recipient" or "psk".
        let mode: String
        let recipientPrivate: String?
        let recipientPublic: String?
        /// Recipient mode: the sending vault's static (recipient) key pair.
        let senderPrivate: String?
        let senderPublic: String?
        let psk: String?
        let keyID: String
    }

    struct End: Codable {
        let ephemeralPrivate: String
        let ephemeralPublic: String
        let random: String
    }

    struct Derived: Codable {
        let firstSecret: String
        let ephemeralShared: String
        let handshakeHash: String
        let senderToReceiverKey: String
        let receiverToSenderKey: String
        let transferID: String
        /// SHA-256 of the bytes the receiver already had (none: the hash of nothing).
        let prefixSHA256: String
        let finalTranscript: String
    }

    struct Message: Codable {
        let index: Int
        let direction: String
        /// "hello" or "frame".
        let kind: String
        let type: String?
        let sequence: UInt64?
        /// The frame's plaintext payload.
        let payload: String?
        /// The sender's transcript hash after this frame (frames the sender sent).
        let transcript: String?
        let bytes: String
    }

    struct ReceiverCommit: Codable {
        /// The receiving vault's root key (it has no slot in the container yet).
        let vaultRootKey: String
        /// The generation the receiver committed and sent in DONE.
        let generation: UInt64
    }

    let description: String
    let source: String
    let container: Container
    let authentication: Authentication
    let sender: End
    let receiver: End
    let derived: Derived
    let messages: [Message]
    let receiverCommit: ReceiverCommit
}
