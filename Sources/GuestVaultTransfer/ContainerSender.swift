import Foundation
import GuestVaultCore
import GuestVaultCrypto
public import GuestVaultKeys
public import Logging
import GuestVaultState

extension ContainerTransfer {
    /// Sends the container at `path` (unlocked with `vault`) over `channel`.
    public static func send(
        containerAt path: String, vault: KeyVault, over channel: ByteChannel, authentication: TransferAuthentication,
        transferID: [UInt8]? = nil, logger: Logger = ContainerTransfer.silentLogger, progress: ((Progress) -> Void)? = nil
    ) throws -> Report {
        try send(containerAt: path, vault: vault, over: channel, authentication: authentication, transferID: transferID,
                 logger: logger, progress: progress, handshake: nil, observer: nil)
    }

    /// `send` with fixed handshake values and a frame observer: what the transcript
    /// vectors are recorded through (GuestVaultTransferTesting.TranscriptRecorder).
    package static func send(
        containerAt path: String, vault: KeyVault, over channel: ByteChannel, authentication: TransferAuthentication,
        transferID: [UInt8]?, logger: Logger = ContainerTransfer.silentLogger, progress: ((Progress) -> Void)?,
        handshake: FixedHandshake?, observer: ((TransferFrameEvent) -> Void)?
    ) throws -> Report {
        let start = DispatchTime.now().uptimeNanoseconds
        let container = try GuestStateContainer.open(at: path)
        try container.unlock(with: UnlockCredentials(vault: vault))
        var logger = logger
        logger[metadataKey: "vm"] = "\(container.vm.uuidString.lowercased())"
        let length = UInt64(clamping: container.logEnd)
        let manifest = TransferManifest(transferID: try transferID ?? stableTransferID(container), vm: container.vm,
                                        containerID: container.containerID, generation: container.generation, length: length)
        let secure = try SecureChannel.establish(over: channel, role: .sender, authentication: authentication,
                                                 ephemeral: handshake?.ephemeral, random: handshake?.random)
        secure.observer = observer
        logger.info("sending", metadata: ["generation": "\(manifest.generation)", "bytes": "\(length)"])
        try secure.send(.manifest, manifest.bytes)

        let (type, ack) = try secure.receive()
        if type == .error { throw TransferError(.peer, "the receiver refused; it says: \(PeerText.quoted(ack))") }
        if type == .done {
            // The receiver has this container already (an earlier try committed it but
            // its DONE was lost): nothing to send.
            let generation = try Offset64.parse(ack, "a DONE frame")
            logger.info("the receiver has this container already", metadata: ["generation": "\(generation)"])
            return Report(vm: container.vm, generation: generation, bytes: 0, resumedFrom: length,
                          seconds: seconds(since: start), sender: secure.senderKey.map { hexString($0) })
        }
        guard type == .ack else { throw TransferError(.unexpectedFrame, "expected the receiver's acknowledgement, got \(type)") }
        let resumeFrom = try Offset64.parse(ack, "the receiver's acknowledgement")
        guard resumeFrom <= length else { throw TransferError(.unexpectedFrame, "the receiver asks to resume at \(resumeFrom), past the end \(length)") }
        var acknowledged = resumeFrom

        try secure.send(.key, secret: container.protectionKey())

        // The bytes the receiver kept from an earlier session are checked by digest
        // (FINAL); the bytes sent now are bound by the frames' tags and the transcript.
        var prefix = try SHA256()
        var offset: UInt64 = 0
        var frame = [UInt8](repeating: 0, count: FrameHeader.count + 8 + dataChunk + AESGCM.tagByteCount)
        while offset < resumeFrom {
            let count = Int(min(UInt64(dataChunk), resumeFrom - offset))
            let read = try container.readRaw(into: &frame, bufferOffset: 0, at: Int64(offset), count: count)
            guard read == count else { throw TransferError(.io, "\(path) ended at \(offset) while sending") }
            try prefix.update(frame, range: 0..<count)
            offset += UInt64(count)
        }

        /// The receiver speaks during the data only to acknowledge, or to stop us.
        func handleReply(_ type: FrameType, _ payload: [UInt8]) throws {
            switch type {
            case .ack:
                let value = try Offset64.parse(payload, "an acknowledgement")
                guard value >= acknowledged, value <= offset else {
                    throw TransferError(.unexpectedFrame, "the receiver acknowledged \(value) after \(acknowledged), with \(offset) sent")
                }
                acknowledged = value
            case .error: throw TransferError(.peer, "the receiver stopped the transfer; it says: \(PeerText.quoted(payload))")
            default: throw TransferError(.unexpectedFrame, "unexpected \(type) frame from the receiver during the data")
            }
        }

        var sinceReport: UInt64 = 0
        while offset < length {
            let count = Int(min(UInt64(dataChunk), length - offset))
            let read = try container.readRaw(into: &frame, bufferOffset: FrameHeader.count + 8, at: Int64(offset), count: count)
            guard read == count else { throw TransferError(.io, "\(path) ended at \(offset) while sending") }
            frame.replaceSubrange(FrameHeader.count..<(FrameHeader.count + 8), with: Offset64.bytes(offset))
            try secure.send(.data, frame: &frame, payloadCount: 8 + count)
            offset += UInt64(count)
            // Read what the receiver said, so its ACKs never fill the connection.
            while let (type, payload) = try secure.receiveIfReady() { try handleReply(type, payload) }
            sinceReport += UInt64(count)
            if sinceReport >= 16 << 20 || offset == length {
                sinceReport = 0
                progress?(Progress(bytes: offset - resumeFrom, total: length - resumeFrom, seconds: seconds(since: start)))
            }
        }
        let final = FinalPayload(length: length, keptDigest: try prefix.finalize(), transcript: try secure.sentTranscriptHash())
        try secure.send(.final, final.bytes)

        while true {
            let (type, payload) = try secure.receive()
            guard type == .done else { try handleReply(type, payload); continue }
            let generation = try Offset64.parse(payload, "a DONE frame")
            logger.info("sent", metadata: ["generation": "\(generation)", "bytes": "\(length - resumeFrom)", "resumedFrom": "\(resumeFrom)"])
            return Report(vm: container.vm, generation: generation, bytes: length - resumeFrom, resumedFrom: resumeFrom,
                          seconds: seconds(since: start), sender: secure.senderKey.map { hexString($0) })
        }
    }
}
