import Dispatch
import GuestVaultCore
package import Foundation
package import GuestVaultCrypto
package import GuestVaultKeys
import GuestVaultState
package import GuestVaultTransfer
import Synchronization

// Transcript vectors (Vectors/formats/transfer/): a whole sender → receiver exchange with
// fixed handshake values, recorded message by message, so another implementation of
// docs/TRANSFER.md can check itself frame by frame.
//
// `ContainerTransfer.send` and `.receive` draw their ephemeral keys and randoms inside, so
// the two ends here are driven through the same `SecureChannel.establish(…ephemeral:random:)`,
// `SecureChannel` frames, manifest layout, transfer id and constants as the real ones, with
// the fixed values passed in. The tests run these ends against the real `send` and
// `receive` to show they exchange the same payloads.

// MARK: Fixed inputs

/// The sealed container as a sender reads it once: the bytes [0, logEnd), its DEK, and
/// what the manifest says about it (docs/TRANSFER.md §4.2).
package struct TransferSource: Sendable {
    package let path: String
    package let vault: KeyVault
    package let bytes: [UInt8]
    package let dek: SecretBytes
    package let vm: UUID
    package let containerID: [UInt8]
    package let generation: UInt64
    package let transferID: [UInt8]

    /// Opens and unlocks the container the way `ContainerTransfer.send` does; the
    /// transfer id is the same stable one unless given.
    package init(containerAt path: String, vault: KeyVault, transferID: [UInt8]? = nil) throws {
        self.path = path
        self.vault = vault
        let container = try GuestStateContainer.open(at: path)
        try container.unlock(with: UnlockCredentials(vault: vault))
        bytes = try container.rawBytes(at: 0, count: Int(container.logEnd))
        dek = try container.protectionKey()
        vm = container.vm
        containerID = container.containerID
        generation = container.generation
        self.transferID = try transferID ?? ContainerTransfer.stableTransferID(container)
    }
}

// MARK: Recording

package enum TranscriptRecorder {
    package enum Direction: String, Sendable {
        case senderToReceiver = "sender->receiver"
        case receiverToSender = "receiver->sender"
    }

    /// A frame as one end sent or received it (plaintext payload). For frames the sender
    /// sent, `transcript` is its transcript hash after the frame (docs/TRANSFER.md §3.3).
    package struct Frame: Sendable, Equatable {
        package let direction: Direction
        package let type: FrameType
        package let payload: [UInt8]
        package let transcript: [UInt8]?
    }

    /// One `ByteChannel.send`: a hello or one whole frame.
    package struct Message: Sendable {
        package let direction: Direction
        package let bytes: [UInt8]
        /// Nil for the two hellos.
        package let frame: Frame?
    }

    package struct Transcript: Sendable {
        package let messages: [Message]
        package let keyID: [UInt8]
        /// X25519(sender ephemeral, recipient key) || X25519(sender key, recipient key),
        /// or the PSK.
        package let firstSecret: [UInt8]
        /// X25519(sender ephemeral, receiver ephemeral).
        package let ephemeralShared: [UInt8]
        package let handshakeHash: [UInt8]
        package let senderToReceiverKey: [UInt8]
        package let receiverToSenderKey: [UInt8]
        /// The generation the receiver committed (the DONE frame's payload).
        package let committedGeneration: UInt64
    }

    /// The hello key id for `authentication` (docs/TRANSFER.md §2.1).
    package static func keyID(for authentication: TransferAuthentication) throws -> [UInt8] {
        try Hello.keyID(for: authentication)
    }

    /// Runs a sender and a receiver with fixed handshake values over an in-memory stream,
    /// and records every message in the order it was sent. The receiver commits the
    /// container at `destination` for `receiverVault`. For containers under 64 MiB (no
    /// acknowledgements during the data), so the order is fixed by the protocol alone.
    package static func recordTranscript(
        source: TransferSource, senderAuthentication: TransferAuthentication, sender: FixedHandshake,
        receiverAuthentication: TransferAuthentication, receiver: FixedHandshake,
        receiverVault: KeyVault, destination: String
    ) throws -> Transcript {
        let sent = Mutex<[(Direction, [UInt8])]>([])
        let senderStarted = DispatchSemaphore(value: 0)
        let (senderEnd, receiverEnd) = MemoryChannel.pair(
            observeFirst: { bytes in
                sent.withLock { $0.append((.senderToReceiver, bytes)) }
                senderStarted.signal()
            },
            observeSecond: { bytes in sent.withLock { $0.append((.receiverToSender, bytes)) } })

        let senderResult = Mutex<Result<[Frame], any Error>?>(nil)
        let senderDone = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let result = Result { try TranscriptRecorder.send(source, over: senderEnd, authentication: senderAuthentication, handshake: sender) }
            senderEnd.close()
            senderResult.withLock { $0 = result }
            senderDone.signal()
        }
        // The receiver starts once the sender's hello is out, so the hellos are recorded
        // in the order sender, receiver; every later message waits for the one before.
        senderStarted.wait()
        let received = Result {
            try TranscriptRecorder.receive(over: receiverEnd, into: destination, vault: receiverVault, authentication: receiverAuthentication,
                        handshake: receiver)
        }
        receiverEnd.close()
        senderDone.wait()
        let senderFrames = try senderResult.withLock { $0! }.get()
        let receiverFrames = try received.get()

        // Pair each recorded frame with its plaintext: the sender's list for the frames it
        // sent, the receiver's for the frames it sent.
        var fromSender = senderFrames.filter { $0.direction == .senderToReceiver }[...]
        var fromReceiver = receiverFrames.filter { $0.direction == .receiverToSender }[...]
        var messages: [Message] = []
        for (index, (direction, bytes)) in sent.withLock({ $0 }).enumerated() {
            guard index >= 2 else {
                messages.append(Message(direction: direction, bytes: bytes, frame: nil))
                continue
            }
            let frame = direction == .senderToReceiver ? fromSender.popFirst() : fromReceiver.popFirst()
            guard let frame else { throw TransferError(.unexpectedFrame, "recorded message \(index) has no matching frame") }
            messages.append(Message(direction: direction, bytes: bytes, frame: frame))
        }
        guard messages.count >= 2, messages[0].direction == .senderToReceiver, messages[1].direction == .receiverToSender else {
            throw TransferError(.unexpectedFrame, "the recording does not start with the sender's hello, then the receiver's")
        }
        guard let done = receiverFrames.last, done.type == .done, done.payload.count == 8 else {
            throw TransferError(.unexpectedFrame, "the receiver did not finish with a DONE frame")
        }

        let first: SecretBytes
        switch senderAuthentication {
        case .toRecipient(let recipient, let senderKey):
            first = SecretBytes(concatenating: [try sender.ephemeral.sharedSecret(with: recipient), try senderKey.sharedSecret(with: recipient)])
        case .presharedKey(let psk): first = psk
        case .asRecipient: throw TransferError(.keys, "the sender side cannot use a recipient private key")
        }
        let ephemeralShared = try sender.ephemeral.sharedSecret(with: receiver.ephemeral.publicKey)
        let keys = try SessionKeys.derive(first: first, ephemeralShared: ephemeralShared,
                                          senderHello: messages[0].bytes, receiverHello: messages[1].bytes)
        return Transcript(
            messages: messages, keyID: try Hello.keyID(for: senderAuthentication),
            firstSecret: first.unsafeCopyOfBytes(), ephemeralShared: ephemeralShared.unsafeCopyOfBytes(),
            handshakeHash: keys.handshakeHash, senderToReceiverKey: keys.senderToReceiver.unsafeCopyOfBytes(),
            receiverToSenderKey: keys.receiverToSender.unsafeCopyOfBytes(), committedGeneration: UInt64(bigEndianBytes: done.payload) ?? 0)
    }

    // MARK: The two ends: the real `ContainerTransfer` functions with fixed handshake values

    /// `ContainerTransfer.send` of `source` with fixed handshake values. Returns every
    /// frame sent and received, in order.
    package static func send(
        _ source: TransferSource, over channel: ByteChannel, authentication: TransferAuthentication, handshake: FixedHandshake
    ) throws -> [Frame] {
        let frames = Mutex<[Frame]>([])
        _ = try ContainerTransfer.send(
            containerAt: source.path, vault: source.vault, over: channel, authentication: authentication,
            transferID: source.transferID, progress: nil, handshake: handshake,
            observer: { event in
                frames.withLock {
                    $0.append(Frame(direction: event.sent ? .senderToReceiver : .receiverToSender, type: event.type,
                                    payload: event.payload, transcript: event.sent ? event.transcript : nil))
                }
            })
        return frames.withLock { $0 }
    }

    /// `ContainerTransfer.receive` with fixed handshake values. Returns every frame sent
    /// and received, in order.
    package static func receive(
        over channel: ByteChannel, into destination: String, vault: KeyVault, authentication: TransferAuthentication,
        handshake: FixedHandshake
    ) throws -> [Frame] {
        let frames = Mutex<[Frame]>([])
        _ = try ContainerTransfer.receive(
            over: channel, into: destination, vault: vault, authentication: authentication, progress: nil, handshake: handshake,
            observer: { event in
                frames.withLock {
                    $0.append(Frame(direction: event.sent ? .receiverToSender : .senderToReceiver, type: event.type,
                                    payload: event.payload, transcript: nil))
                }
            })
        return frames.withLock { $0 }
    }

}
