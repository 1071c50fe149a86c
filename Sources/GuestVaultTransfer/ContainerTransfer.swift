public import Foundation
import GuestVaultCrypto
public import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem

/// Moves a sealed container between hosts (docs/TRANSFER.md §4): the sealed file as it
/// is, its DEK inside the encrypted session so the receiver can wrap it for its own
/// vault, and a final frame whose transcript and file digest the receiver checks before
/// anything becomes visible.
public enum ContainerTransfer {
    public struct Progress: Sendable {
        public let bytes: UInt64
        public let total: UInt64
        public let seconds: Double
        public var bytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds : 0 }
    }

    public struct Report: Sendable, Codable {
        public let vm: UUID
        public let generation: UInt64
        public let bytes: UInt64
        public let resumedFrom: UInt64
        public let seconds: Double
        /// Recipient mode: the sending vault's recipient public key (hex); nil with a PSK.
        public let sender: String?
    }

    static let dataChunk = 1 << 20
    static let ackEvery: UInt64 = 64 << 20
    static let writebackEvery: UInt64 = 8 << 20
    /// The largest container a receiver accepts unless told otherwise (1 TiB).
    public static let defaultMaximumBytes: UInt64 = 1 << 40

    // MARK: Sending

    /// Sends the container at `path` (unlocked with `vault`) over `channel`.
    public static func send(
        containerAt path: String, vault: KeyVault, over channel: ByteChannel, authentication: TransferAuthentication,
        transferID: [UInt8]? = nil, progress: ((Progress) -> Void)? = nil
    ) throws -> Report {
        try send(containerAt: path, vault: vault, over: channel, authentication: authentication, transferID: transferID,
                 progress: progress, handshake: nil, observer: nil)
    }

    /// `send` with fixed handshake values and a frame observer: what the transcript
    /// vectors are recorded through (TranscriptRecorder).
    package static func send(
        containerAt path: String, vault: KeyVault, over channel: ByteChannel, authentication: TransferAuthentication,
        transferID: [UInt8]?, progress: ((Progress) -> Void)?, handshake: FixedHandshake?, observer: ((TransferFrameEvent) -> Void)?
    ) throws -> Report {
        let start = DispatchTime.now().uptimeNanoseconds
        let container = try GuestStateContainer.open(at: path)
        try container.unlock(with: UnlockCredentials(vault: vault))
        let length = UInt64(container.logEnd)
        let id = try transferID ?? stableTransferID(container)
        let secure = try SecureChannel.establish(over: channel, role: .sender, authentication: authentication,
                                                 ephemeral: handshake?.ephemeral, random: handshake?.random)
        secure.observer = observer

        var manifest = ByteWriterT()
        manifest.raw(id)
        manifest.raw(withUnsafeBytes(of: container.vm.uuid) { Array($0) })
        manifest.raw(container.containerID)
        manifest.u64(container.generation)
        manifest.u64(length)
        try secure.send(.manifest, manifest.bytes)

        let (type, ack) = try secure.receive()
        if type == .error { throw TransferError(.peer, "the receiver refused: \(String(decoding: ack, as: UTF8.self))") }
        if type == .done, ack.count == 8 {
            // The receiver has this container already (an earlier try committed it but
            // its DONE was lost): nothing to send.
            return Report(vm: container.vm, generation: uint64(ack[...]), bytes: 0, resumedFrom: length,
                          seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9, sender: secure.senderKey.map { hexString($0) })
        }
        guard type == .ack, ack.count == 8 else { throw TransferError(.unexpectedFrame, "expected the receiver's acknowledgement, got \(type)") }
        let resumeFrom = uint64(ack[...])
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
                guard payload.count == 8 else { throw TransferError(.unexpectedFrame, "an acknowledgement of \(payload.count) bytes") }
                let value = uint64(payload[...])
                guard value >= acknowledged, value <= offset else {
                    throw TransferError(.unexpectedFrame, "the receiver acknowledged \(value) after \(acknowledged), with \(offset) sent")
                }
                acknowledged = value
            case .error: throw TransferError(.peer, "the receiver refused: \(String(decoding: payload, as: UTF8.self))")
            default: throw TransferError(.unexpectedFrame, "unexpected \(type) frame from the receiver during the data")
            }
        }

        var sinceReport: UInt64 = 0
        while offset < length {
            let count = Int(min(UInt64(dataChunk), length - offset))
            let read = try container.readRaw(into: &frame, bufferOffset: FrameHeader.count + 8, at: Int64(offset), count: count)
            guard read == count else { throw TransferError(.io, "\(path) ended at \(offset) while sending") }
            frame.replaceSubrange(FrameHeader.count..<(FrameHeader.count + 8), with: bigEndian64(offset))
            try secure.send(.data, frame: &frame, payloadCount: 8 + count)
            offset += UInt64(count)
            // Read what the receiver said, so its ACKs never fill the connection.
            while let (type, payload) = try secure.receiveIfReady() { try handleReply(type, payload) }
            sinceReport += UInt64(count)
            if sinceReport >= 16 << 20 || offset == length {
                sinceReport = 0
                progress?(Progress(bytes: offset - resumeFrom, total: length - resumeFrom,
                                   seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9))
            }
        }
        var final = ByteWriterT()
        final.u64(length)
        final.raw(try prefix.finalize())
        final.raw(try secure.sentTranscriptHash())
        try secure.send(.final, final.bytes)

        while true {
            let (type, payload) = try secure.receive()
            guard type == .done else { try handleReply(type, payload); continue }
            guard payload.count == 8 else { throw TransferError(.unexpectedFrame, "a DONE frame of \(payload.count) bytes") }
            return Report(vm: container.vm, generation: uint64(payload[...]), bytes: length - resumeFrom, resumedFrom: resumeFrom,
                          seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9,
                          sender: secure.senderKey.map { hexString($0) })
        }
    }

    /// A transfer id that is the same for the same container generation, so a retry
    /// after a broken connection resumes.
    static func stableTransferID(_ container: GuestStateContainer) throws -> [UInt8] {
        var w = ByteWriterT()
        w.raw(Array("GuestVault v1 transfer id".utf8))
        w.raw(container.containerID)
        w.u64(container.generation)
        w.u64(UInt64(container.logEnd))
        return Array(try SHA256.hash(w.bytes).prefix(16))
    }

    // MARK: Receiving

    /// Receives one container over `channel` into `destination`, which must not exist —
    /// unless it holds this very container already (same container id, at the sent
    /// generation or later: an earlier try committed it and its DONE was lost); then the
    /// receiver answers DONE at once. Nothing appears at `destination` until the final
    /// frame has verified; then the container is given a slot for `vault` (if it has
    /// none), committed, and renamed into place. A broken transfer leaves
    /// `destination.partial-<id>` for a resumed retry.
    /// A container longer than `maximumBytes`, or than the free space, is refused before
    /// any of it is written.
    public static func receive(
        over channel: ByteChannel, into destination: String, vault: KeyVault, authentication: TransferAuthentication,
        maximumBytes: UInt64 = defaultMaximumBytes, progress: ((Progress) -> Void)? = nil
    ) throws -> Report {
        try receive(over: channel, into: destination, vault: vault, authentication: authentication, maximumBytes: maximumBytes,
                    progress: progress, handshake: nil, observer: nil)
    }

    /// `receive` with fixed handshake values and a frame observer (TranscriptRecorder).
    package static func receive(
        over channel: ByteChannel, into destination: String, vault: KeyVault, authentication: TransferAuthentication,
        maximumBytes: UInt64 = defaultMaximumBytes,
        progress: ((Progress) -> Void)?, handshake: FixedHandshake?, observer: ((TransferFrameEvent) -> Void)?
    ) throws -> Report {
        let start = DispatchTime.now().uptimeNanoseconds
        let secure = try SecureChannel.establish(over: channel, role: .receiver, authentication: authentication,
                                                 ephemeral: handshake?.ephemeral, random: handshake?.random)
        secure.observer = observer
        do {
            return try receiveFrames(secure, into: destination, vault: vault, maximumBytes: maximumBytes, start: start, progress: progress)
        } catch let error as TransferError {
            if ![.truncated, .peer, .timeout].contains(error.code) { try? secure.send(.error, Array(peerMessage(error.code).utf8)) }
            throw error
        } catch let error as ContainerError {
            try? secure.send(.error, Array(peerMessage(.integrity).utf8))
            throw TransferError(.integrity, "the received container does not open: \(error)")
        } catch {
            // The vault or the crypto core failed while the container was being made
            // this vault's (a slot, a counter): still one error type, and the sender told.
            try? secure.send(.error, Array(peerMessage(.io).utf8))
            throw TransferError(.io, "the container could not be stored in this vault: \(error)")
        }
    }

    /// What an ERROR frame says: the kind of failure, never local detail (paths, keys);
    /// the receiver's own error has that.
    static func peerMessage(_ code: TransferError.Code) -> String {
        let text = switch code {
        case .authenticationFailed: "a frame did not authenticate"
        case .sequence: "a frame arrived out of order"
        case .unexpectedFrame: "a frame was not what the protocol allows here"
        case .tooLarge: "the container is larger than this receiver accepts or has room for"
        case .integrity: "the received container did not verify or is not acceptable here"
        case .keys: "the keys do not fit"
        case .io: "the receiver could not store the container"
        default: "the transfer failed"
        }
        return "\(code): \(text)"
    }

    private static func receiveFrames(
        _ secure: SecureChannel, into destination: String, vault: KeyVault, maximumBytes: UInt64, start: UInt64, progress: ((Progress) -> Void)?
    ) throws -> Report {
        let (type, manifest) = try secure.receive()
        guard type == .manifest, manifest.count == 64 else { throw TransferError(.unexpectedFrame, "expected a manifest of 64 bytes first, got \(type) of \(manifest.count)") }
        let transferID = Array(manifest[0..<16])
        let vmBytes = Array(manifest[16..<32])
        let vm = UUID(uuid: (vmBytes[0], vmBytes[1], vmBytes[2], vmBytes[3], vmBytes[4], vmBytes[5], vmBytes[6], vmBytes[7],
                             vmBytes[8], vmBytes[9], vmBytes[10], vmBytes[11], vmBytes[12], vmBytes[13], vmBytes[14], vmBytes[15]))
        let expected = Expected(containerID: hexString(manifest[32..<48]), generation: uint64(manifest[48..<56]))
        let length = uint64(manifest[56..<64])
        guard length >= 4096 else { throw TransferError(.unexpectedFrame, "a container of \(length) bytes is too short") }
        guard length <= maximumBytes else {
            throw TransferError(.tooLarge, "the sender announces a container of \(length) bytes; this receiver accepts at most \(maximumBytes)")
        }
        if FileSystem.exists(destination) {
            // Only this very container, committed by an earlier try, is an answer.
            if let existing = try? GuestStateContainer.open(at: destination), existing.vm == vm,
               existing.info.containerID.hex == expected.containerID, existing.generation >= expected.generation {
                try secure.send(.done, bigEndian64(existing.generation))
                return Report(vm: vm, generation: existing.generation, bytes: 0, resumedFrom: length,
                              seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9, sender: secure.senderKey.map { hexString($0) })
            }
            throw TransferError(.io, "\(destination) already exists and holds another container; nothing was received")
        }

        let partial = "\(destination).partial-\(hexString(transferID))"
        let acknowledged = Acknowledged(path: partial + ".ack")
        let file: OpenFile
        var have: UInt64 = 0
        var prefix = try SHA256()
        do {
            let free = try FileSystem.availableBytes(at: FileSystem.parentDirectory(of: partial))
            func checkRoom(_ have: UInt64) throws {
                guard length - have <= free else {
                    throw TransferError(.tooLarge, "the container needs \(length - have) more bytes next to \(destination); \(free) are free")
                }
            }
            let exists = FileSystem.exists(partial)
            if !exists { try checkRoom(0) }
            file = exists ? try OpenFile(path: partial, mode: .readWrite) : try OpenFile(creating: partial)
            guard try file.tryLock() else { throw TransferError(.io, "another receive is writing \(partial)") }
            if exists {
                // Resume from what was acknowledged (synced); anything after it may not
                // have reached the disk.
                have = min(acknowledged.load(), UInt64(try file.size()), length)
                try file.truncate(to: Int64(have))
                try checkRoom(have)
            }
        } catch let error as TransferError {
            throw error
        } catch {
            throw TransferError(.io, "cannot write \(partial): \(error)")
        }
        try secure.send(.ack, bigEndian64(have))
        // Hash what is already here while the sender hashes its copy (FINAL compares).
        do {
            var buffer = [UInt8](repeating: 0, count: dataChunk)
            var offset: UInt64 = 0
            while offset < have {
                let count = Int(min(UInt64(dataChunk), have - offset))
                guard try file.read(into: &buffer, at: Int64(offset), count: count) == count else {
                    throw TransferError(.io, "\(partial) ended at \(offset) while it was re-read")
                }
                try prefix.update(buffer, range: 0..<count)
                offset += UInt64(count)
            }
        } catch let error as TransferError {
            throw error
        } catch {
            throw TransferError(.io, "cannot read \(partial): \(error)")
        }

        let keyFrame = try secure.receiveInPlace()
        guard keyFrame.type == .key, keyFrame.payload.count == 32 else {
            throw TransferError(.unexpectedFrame, "expected the key frame, got \(keyFrame.type) of \(keyFrame.payload.count) bytes")
        }
        let dek = SecretBytes(copying: secure.payload(of: keyFrame))
        secure.wipePayload(of: keyFrame)

        var offset = have
        var sinceAck: UInt64 = 0
        var sinceReport: UInt64 = 0
        var sinceWriteback: UInt64 = 0
        while true {
            let frame = try secure.receiveInPlace()
            switch frame.type {
            case .data:
                let payload = secure.payload(of: frame)
                guard payload.count > 8 else { throw TransferError(.unexpectedFrame, "an empty data frame") }
                let at = uint64(payload.prefix(8))
                let count = UInt64(payload.count - 8)
                guard at == offset, count <= length - offset else {
                    throw TransferError(.unexpectedFrame, "data for bytes \(at)..<\(at &+ count) arrived where \(offset) was due (length \(length))")
                }
                do { try file.write(payload.dropFirst(8), at: Int64(at)) } catch { throw TransferError(.io, "cannot write \(partial): \(error)") }
                offset += count
                sinceAck += count
                sinceReport += count
                sinceWriteback += count
                if sinceWriteback >= writebackEvery {
                    // Let the disk work while more arrives, so the sync before the next
                    // ACK finds little left to write.
                    file.startWriteback(at: Int64(offset - sinceWriteback), count: Int64(sinceWriteback))
                    sinceWriteback = 0
                }
                if sinceAck >= ackEvery {
                    // Durable before acknowledged: a retry resumes from here.
                    do {
                        try file.syncData()
                        try acknowledged.store(offset)
                    } catch {
                        throw TransferError(.io, "cannot sync \(partial): \(error)")
                    }
                    try secure.send(.ack, bigEndian64(offset))
                    sinceAck = 0
                }
                if sinceReport >= 16 << 20 || offset == length {
                    sinceReport = 0
                    progress?(Progress(bytes: offset - have, total: length - have, seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9))
                }
            case .final:
                let payload = secure.payload(of: frame)
                guard payload.count == 72 else { throw TransferError(.unexpectedFrame, "a final frame of \(payload.count) bytes") }
                let base = payload.startIndex
                guard uint64(payload[base..<(base + 8)]) == length, offset == length else {
                    throw TransferError(.integrity, "the final frame came after \(offset) of \(length) bytes")
                }
                // The transcript covers every frame before the final one, in this session.
                guard constantTimeEquals(Array(payload[(base + 40)..<(base + 72)]), secure.transcriptBeforeLastReceived) else {
                    throw TransferError(.integrity, "the transcript does not match: frames were changed, dropped or added")
                }
                guard constantTimeEquals(Array(payload[(base + 8)..<(base + 40)]), try prefix.finalize()) else {
                    // What was kept from an earlier session is not what the sender has:
                    // nothing here can be resumed from.
                    for path in [partial, partial + ".ack"] { try? FileSystem.removeFile(path) }
                    throw TransferError(.integrity, "the \(have) bytes kept from an earlier session differ from the sender's")
                }
                let generation: UInt64
                do {
                    generation = try commit(partial: partial, file: file, length: length, to: destination, dek: dek, vault: vault, vm: vm, expected: expected)
                } catch {
                    // Every byte arrived and verified, but the container is not acceptable
                    // here (another VM, a rollback, a bad key): nothing to resume.
                    for path in [partial, partial + ".lock", partial + ".ack"] { try? FileSystem.removeFile(path) }
                    throw error
                }
                try secure.send(.done, bigEndian64(generation))
                return Report(vm: vm, generation: generation, bytes: length - have, resumedFrom: have,
                              seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9,
                              sender: secure.senderKey.map { hexString($0) })
            case .error:
                throw TransferError(.peer, "the sender stopped: \(String(decoding: secure.payload(of: frame), as: UTF8.self))")
            default:
                throw TransferError(.unexpectedFrame, "unexpected \(frame.type) frame during the data")
            }
        }
    }

    /// What the manifest said of the container, checked against what arrived.
    struct Expected {
        let containerID: String
        let generation: UInt64
    }

    /// Makes the received file a container of this vault and puts it in place.
    private static func commit(
        partial: String, file: OpenFile, length: UInt64, to destination: String, dek: SecretBytes, vault: KeyVault, vm: UUID, expected: Expected
    ) throws -> UInt64 {
        do {
            try file.truncate(to: Int64(length))
            try file.sync()
        } catch {
            throw TransferError(.io, "cannot sync \(partial): \(error)")
        }
        let container = try GuestStateContainer.open(at: partial, access: .readWrite)
        guard container.vm == vm else { throw TransferError(.integrity, "the container is for another VM than the manifest said") }
        guard container.info.containerID.hex == expected.containerID, container.generation == expected.generation else {
            throw TransferError(.integrity, "the container is \(container.info.containerID) at generation \(container.generation); the manifest said \(expected.containerID) at \(expected.generation)")
        }
        try container.unlock(withKey: dek, vault: vault)
        let hasOwnSlot = container.slots.slots.contains { if case .vault(let id, _, _) = $0 { return id == vault.rootKeyID } else { return false } }
        if !hasOwnSlot {
            let epoch: UInt32 = 1
            try container.addSlot { try .wrapForVault($0, vault: vault, vm: vm, epoch: epoch) }
        }
        try container.flush()
        let generation = container.generation
        do {
            try FileSystem.link(partial, to: destination)
        } catch {
            throw TransferError(.io, "cannot put the container in place at \(destination): \(error)")
        }
        // In place: from here a failure to tidy up is not a failed transfer.
        for path in [partial, partial + ".lock", partial + ".ack"] { try? FileSystem.removeFile(path) }
        do {
            try FileSystem.syncDirectory(FileSystem.parentDirectory(of: destination))
        } catch {
            throw TransferError(.io, "\(destination) is in place but its directory could not be synced: \(error)")
        }
        return generation
    }
}

/// The acknowledged offset of a partial transfer: 8 bytes and their SHA-256/8, written
/// atomically after the data up to it was synced.
struct Acknowledged {
    let path: String

    func load() -> UInt64 {
        guard let bytes = try? FileSystem.readFile(path, limit: 64), bytes.count == 16,
              let check = try? SHA256.hash(Array(bytes[0..<8])), Array(check.prefix(8)) == Array(bytes[8..<16]) else { return 0 }
        return bytes[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    func store(_ offset: UInt64) throws {
        let value = bigEndian64(offset)
        try FileSystem.writeAtomically(value + Array(try SHA256.hash(value).prefix(8)), to: path)
    }
}

/// A big-endian integer from up to 8 bytes.
func uint64(_ bytes: ArraySlice<UInt8>) -> UInt64 { bytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) } }

func bigEndian64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64($0))) } }

struct ByteWriterT {
    var bytes: [UInt8] = []
    mutating func u64(_ v: UInt64) { bytes += bigEndian64(v) }
    mutating func raw(_ v: [UInt8]) { bytes += v }
}
