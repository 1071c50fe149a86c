public import Foundation
public import GuestVaultCore
import GuestVaultCrypto
public import GuestVaultKeys
public import Logging
import GuestVaultState
import GuestVaultSystem

extension ErrorCode {
    /// The receiving vault has a rollback counter for the container (it holds or held
    /// it): a transfer may not place it anywhere but over the copy it updates.
    public static let containerKnown = ErrorCode("containerKnown", .alreadyExists)
    /// The received container is older than the vault has seen of it.
    public static let staleContainer = ErrorCode("staleContainer", .rollback)
}

/// What a receiver accepts beyond the sender's key.
public struct ReceivePolicy: Sendable {
    /// The largest container accepted.
    public var maximumBytes: UInt64
    /// The VMs whose containers are accepted; nil: any VM.
    public var vms: Set<UUID>?

    public init(maximumBytes: UInt64 = ContainerTransfer.defaultMaximumBytes, vms: Set<UUID>? = nil) {
        self.maximumBytes = maximumBytes
        self.vms = vms
    }
}

extension ContainerTransfer {
    /// Receives one container over `channel` into `destination`, which must not exist —
    /// unless it holds this very container already (same container id, at the sent
    /// generation or later: an earlier try committed it and its DONE was lost); then the
    /// receiver answers DONE at once. Nothing appears at `destination` until the final
    /// frame has verified; then the container is given a slot for `vault` (if it has
    /// none), committed, and linked into place. A broken transfer leaves
    /// `destination.partial-<id>` for a resumed retry.
    ///
    /// Refused before any data: a container larger than `policy.maximumBytes` or the
    /// free space, a VM not in `policy.vms`, and a container this vault has a rollback
    /// counter for (docs/TRANSFER.md §6): a transfer only ever creates a container new to
    /// this vault, with a counter of its own, so it can never make a local container
    /// unreadable or move its counter.
    public static func receive(
        over channel: ByteChannel, into destination: String, vault: KeyVault, authentication: TransferAuthentication,
        policy: ReceivePolicy = ReceivePolicy(), logger: Logger = ContainerTransfer.silentLogger,
        progress: ((Progress) -> Void)? = nil
    ) throws -> Report {
        try receive(over: channel, into: destination, vault: vault, authentication: authentication, policy: policy, logger: logger,
                    progress: progress, handshake: nil, observer: nil)
    }

    /// `receive` with a size limit only (any VM).
    public static func receive(
        over channel: ByteChannel, into destination: String, vault: KeyVault, authentication: TransferAuthentication,
        maximumBytes: UInt64, progress: ((Progress) -> Void)? = nil
    ) throws -> Report {
        try receive(over: channel, into: destination, vault: vault, authentication: authentication,
                    policy: ReceivePolicy(maximumBytes: maximumBytes), progress: progress)
    }

    /// `receive` with fixed handshake values and a frame observer (TranscriptRecorder).
    package static func receive(
        over channel: ByteChannel, into destination: String, vault: KeyVault, authentication: TransferAuthentication,
        policy: ReceivePolicy = ReceivePolicy(), logger: Logger = ContainerTransfer.silentLogger,
        progress: ((Progress) -> Void)?, handshake: FixedHandshake?, observer: ((TransferFrameEvent) -> Void)?
    ) throws -> Report {
        let start = DispatchTime.now().uptimeNanoseconds
        let secure = try SecureChannel.establish(over: channel, role: .receiver, authentication: authentication,
                                                 ephemeral: handshake?.ephemeral, random: handshake?.random)
        secure.observer = observer
        var receiver = Receiver(secure: secure, destination: destination, vault: vault, policy: policy, logger: logger, start: start,
                                progress: progress)
        do {
            return try receiver.run()
        } catch let error as TransferError {
            if ![.truncated, .peer, .timeout].contains(error.code) { try? secure.send(.error, Array(peerMessage(error.code).utf8)) }
            throw error
        } catch let error as ContainerError {
            if error.code == .rollback {
                try? secure.send(.error, Array(peerMessage(.staleContainer).utf8))
                throw TransferError(.staleContainer, "the received container is older than this vault has seen of it", underlying: error)
            }
            try? secure.send(.error, Array(peerMessage(.integrity).utf8))
            throw TransferError(.integrity, "the received container does not open", underlying: error)
        } catch {
            // The vault or the crypto core failed while the container was being made
            // this vault's (a slot, a counter): still one error type, and the sender told.
            try? secure.send(.error, Array(peerMessage(.io).utf8))
            throw TransferError(.io, "the container could not be stored in this vault", underlying: error)
        }
    }

    /// What an ERROR frame says: the kind of failure, never local detail (paths, keys);
    /// the receiver's own error has that.
    static func peerMessage(_ code: ErrorCode) -> String {
        let text = switch code {
        case .authenticationFailed: "a frame did not authenticate"
        case .sequence: "a frame arrived out of order"
        case .unexpectedFrame: "a frame was not what the protocol allows here"
        case .tooLarge: "the container is larger than this receiver accepts or has room for"
        case .integrity: "the received container did not verify or is not acceptable here"
        case .staleContainer: "the container is older than this receiver's vault has seen"
        case .containerKnown: "this receiver's vault holds that container already; send it to the copy it updates"
        case .keys: "the keys do not fit, or this receiver does not accept that VM"
        case .io: "the receiver could not store the container"
        case .timeout: "the handshake took too long"
        case .busy: "another transfer is in progress on this receiver; try again when it is done"
        default: "the transfer failed"
        }
        return "\(code): \(text)"
    }
}

/// One receive after the handshake: the manifest, the data into the partial file, the
/// final frame, and the commit.
private struct Receiver {
    let secure: SecureChannel
    let destination: String
    let vault: KeyVault
    let policy: ReceivePolicy
    var logger: Logger
    let start: UInt64
    let progress: ((ContainerTransfer.Progress) -> Void)?

    private func report(_ manifest: TransferManifest, generation: UInt64, bytes: UInt64, resumedFrom: UInt64) -> ContainerTransfer.Report {
        ContainerTransfer.Report(vm: manifest.vm, generation: generation, bytes: bytes, resumedFrom: resumedFrom,
                                 seconds: ContainerTransfer.seconds(since: start), sender: secure.senderKey.map { hexString($0) })
    }

    mutating func run() throws -> ContainerTransfer.Report {
        let (type, payload) = try secure.receive()
        guard type == .manifest else { throw TransferError(.unexpectedFrame, "expected the manifest first, got \(type)") }
        let manifest = try TransferManifest.parse(payload)
        logger[metadataKey: "vm"] = "\(manifest.vm.uuidString.lowercased())"
        let length = manifest.length
        if let vms = policy.vms, !vms.contains(manifest.vm) {
            throw TransferError(.keys, "the sender offers a container of VM \(manifest.vm.uuidString.lowercased()), which this receiver does not accept (--vm)")
        }
        guard length >= 4096 else { throw TransferError(.unexpectedFrame, "a container of \(length) bytes is too short") }
        // File offsets are Int64: a length past that is refused whatever the limit says.
        guard length <= policy.maximumBytes, length <= UInt64(Int64.max) else {
            throw TransferError(.tooLarge, "the sender announces a container of \(length) bytes; this receiver accepts at most \(min(policy.maximumBytes, UInt64(Int64.max)))")
        }
        // The sender is authenticated and its offer acceptable: the handshake is over.
        try secure.channel.handshakeDidComplete()
        logger.info("receiving", metadata: ["generation": "\(manifest.generation)", "bytes": "\(length)"])

        if let existing = try existingDestination() {
            // Only this very container, committed by an earlier try, is an answer.
            if existing.vm == manifest.vm, existing.containerID == manifest.containerID, existing.generation >= manifest.generation {
                try secure.send(.done, Offset64.bytes(existing.generation))
                return report(manifest, generation: existing.generation, bytes: 0, resumedFrom: length)
            }
            throw TransferError(.io, "\(destination) already exists and holds another container; nothing was received")
        }
        if vault.counters.hasCounter(vm: manifest.vm, container: manifest.containerID) {
            throw TransferError(.containerKnown, "this vault has a rollback counter for container \(hexString(manifest.containerID)) of VM \(manifest.vm.uuidString.lowercased()): it holds (or held) that container, and a transfer only places containers new to it (docs/TRANSFER.md §6)")
        }

        let partial = try PartialFile.open(for: destination, transferID: manifest.transferIDHex, length: length)
        let have = partial.have
        try secure.send(.ack, Offset64.bytes(have))
        // Hash what is already here while the sender hashes its copy (FINAL compares).
        var prefix = try SHA256()
        do {
            var buffer = [UInt8](repeating: 0, count: ContainerTransfer.dataChunk)
            var offset: UInt64 = 0
            while offset < have {
                let count = Int(min(UInt64(ContainerTransfer.dataChunk), have - offset))
                guard try partial.file.read(into: &buffer, at: Int64(offset), count: count) == count else {
                    throw TransferError(.io, "\(partial.path) ended at \(offset) while it was re-read")
                }
                try prefix.update(buffer, range: 0..<count)
                offset += UInt64(count)
            }
        } catch let error as TransferError {
            throw error
        } catch {
            throw TransferError(.io, "cannot read \(partial.path)", underlying: error)
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
                let at = try Offset64.parse(payload.prefix(8), "a data frame's offset")
                let count = UInt64(payload.count - 8)
                // offset <= length always holds, so length - offset cannot wrap.
                guard at == offset, count <= length - offset else {
                    throw TransferError(.unexpectedFrame, "data for \(count) bytes at \(at) arrived where \(offset) was due (length \(length))")
                }
                do { try partial.file.write(payload.dropFirst(8), at: Int64(at)) } catch {
                    throw TransferError(.io, "cannot write \(partial.path)", underlying: error)
                }
                offset += count
                sinceAck += count
                sinceReport += count
                sinceWriteback += count
                if sinceWriteback >= ContainerTransfer.writebackEvery {
                    // Let the disk work while more arrives, so the sync before the next
                    // ACK finds little left to write.
                    partial.file.startWriteback(at: Int64(offset - sinceWriteback), count: Int64(sinceWriteback))
                    sinceWriteback = 0
                }
                if sinceAck >= ContainerTransfer.ackEvery {
                    // Durable before acknowledged: a retry resumes from here.
                    do {
                        try partial.file.syncData()
                        try partial.storeAcknowledged(offset)
                    } catch {
                        throw TransferError(.io, "cannot sync \(partial.path)", underlying: error)
                    }
                    try secure.send(.ack, Offset64.bytes(offset))
                    sinceAck = 0
                }
                if sinceReport >= 16 << 20 || offset == length {
                    sinceReport = 0
                    progress?(ContainerTransfer.Progress(bytes: offset - have, total: length - have, seconds: ContainerTransfer.seconds(since: start)))
                }
            case .final:
                let final = try FinalPayload.parse(secure.payload(of: frame))
                guard final.length == length, offset == length else {
                    throw TransferError(.integrity, "the final frame came after \(offset) of \(length) bytes")
                }
                // The transcript covers every frame before the final one, in this session.
                guard constantTimeEquals(final.transcript, secure.transcriptBeforeLastReceived) else {
                    throw TransferError(.integrity, "the transcript does not match: frames were changed, dropped or added")
                }
                guard constantTimeEquals(final.keptDigest, try prefix.finalize()) else {
                    // What was kept from an earlier session is not what the sender has:
                    // nothing here can be resumed from.
                    partial.remove()
                    throw TransferError(.integrity, "the \(have) bytes kept from an earlier session differ from the sender's")
                }
                let generation: UInt64
                do {
                    generation = try commit(partial, manifest: manifest, dek: dek)
                } catch {
                    // Every byte arrived and verified, but the container is not acceptable
                    // here (another VM, a rollback, a bad key): nothing to resume.
                    partial.remove()
                    throw error
                }
                try secure.send(.done, Offset64.bytes(generation))
                logger.info("received", metadata: ["generation": "\(generation)", "bytes": "\(length - have)", "resumedFrom": "\(have)"])
                return report(manifest, generation: generation, bytes: length - have, resumedFrom: have)
            case .error:
                throw TransferError(.peer, "the sender stopped the transfer; it says: \(PeerText.quoted(secure.payload(of: frame)))")
            default:
                throw TransferError(.unexpectedFrame, "unexpected \(frame.type) frame during the data")
            }
        }
    }

    /// The container at the destination, if something is there: it must be a regular
    /// file (never followed through a symlink).
    private func existingDestination() throws -> GuestStateContainer? {
        guard (try? FileManager.default.attributesOfItem(atPath: destination)) != nil else { return nil }
        do {
            _ = try SafeOpen.existing(destination, mode: .readOnly)
            return try GuestStateContainer.open(at: destination)
        } catch {
            throw TransferError(.io, "\(destination) already exists and is not a container this receiver can check; nothing was received",
                                underlying: error)
        }
    }

    /// Makes the received file a container of this vault and links it into place.
    private func commit(_ partial: PartialFile, manifest: TransferManifest, dek: SecretBytes) throws -> UInt64 {
        do {
            try partial.file.truncate(to: Int64(manifest.length))
            try partial.file.sync()
        } catch {
            throw TransferError(.io, "cannot sync \(partial.path)", underlying: error)
        }
        let container = try GuestStateContainer.open(at: partial.path, access: .readWrite)
        guard container.vm == manifest.vm else { throw TransferError(.integrity, "the container is for another VM than the manifest said") }
        guard container.containerID == manifest.containerID, container.generation == manifest.generation else {
            throw TransferError(.integrity, "the container is \(hexString(container.containerID)) at generation \(container.generation); the manifest said \(hexString(manifest.containerID)) at \(manifest.generation)")
        }
        let hasOwnSlot = container.slots.slots.contains { if case .vault(let id, _, _) = $0 { return id == vault.rootKeyID } else { return false } }
        if !hasOwnSlot {
            // Adding the slot is a commit: the generation must have a successor.
            do { _ = try Checked.next(container.generation, "the received container's generation") } catch {
                throw TransferError(.integrity, "the received container is at generation \(container.generation), the last one: it cannot be committed here",
                                    underlying: error)
            }
        }
        // From the unlock on, this vault has a counter for the container (new: checked
        // above); if the container does not end up in place, the counter goes too.
        do {
            try container.unlock(withKey: dek, vault: vault)
            if !hasOwnSlot {
                let epoch: UInt32 = 1
                try container.addSlot { try .wrapForVault($0, vault: vault, vm: manifest.vm, epoch: epoch) }
            }
            try container.flush()
            let generation = container.generation
            try publish(partial)
            return generation
        } catch {
            try? vault.counters.forget(vm: manifest.vm, container: manifest.containerID)
            throw error
        }
    }

    /// Links the partial file in as the destination (never replacing anything), then
    /// checks that the destination is that file: a regular file of this user. Anything
    /// else (the partial name swapped by another user meanwhile) is removed and refused.
    private func publish(_ partial: PartialFile) throws {
        do {
            try FileSystem.link(partial.path, to: destination)
        } catch {
            throw TransferError(.io, "cannot put the container in place at \(destination)", underlying: error)
        }
        do {
            _ = try PartialFile.openExisting(destination)
        } catch {
            try? FileSystem.removeFile(destination)
            throw TransferError(.io, "\(destination) is not the file this receiver wrote (the partial file was replaced); nothing was received",
                                underlying: error)
        }
        // In place: from here a failure to tidy up is not a failed transfer.
        partial.remove()
        do {
            try FileSystem.syncDirectory(FileSystem.parentDirectory(of: destination))
        } catch {
            throw TransferError(.io, "\(destination) is in place but its directory could not be synced", underlying: error)
        }
    }
}
