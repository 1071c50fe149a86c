import GuestVaultCore
package import GuestVaultCrypto
import GuestVaultSystem

// The secure channel (docs/TRANSFER.md §2-3): the handshake that derives the session
// keys from the two hellos, and the sealed, numbered frames with their transcripts.

/// One end's handshake values: its ephemeral X25519 key and its 32-byte hello random.
package struct FixedHandshake: Sendable {
    package let ephemeral: X25519.PrivateKey
    package let random: [UInt8]

    package init(ephemeral: X25519.PrivateKey, random: [UInt8]) {
        self.ephemeral = ephemeral
        self.random = random
    }
}

/// The session keys: one per direction.
package struct SessionKeys {
    package let senderToReceiver: SecretBytes
    package let receiverToSender: SecretBytes
    package let handshakeHash: [UInt8]

    static let info = Array("GuestVault v1 transfer".utf8)

    /// HKDF-SHA256(IKM = first secret || X25519(ephemerals), salt = SHA-256(sender hello
    /// || receiver hello), info = "GuestVault v1 transfer", 64 bytes).
    package static func derive(first: SecretBytes, ephemeralShared: SecretBytes, senderHello: [UInt8], receiverHello: [UInt8]) throws -> SessionKeys {
        let hash = try SHA256.hash(senderHello + receiverHello)
        let ikm = SecretBytes(concatenating: [first, ephemeralShared])
        let okm = try HKDF.deriveKey(inputKeyMaterial: ikm, salt: hash, info: info, outputByteCount: 64)
        return SessionKeys(senderToReceiver: okm.slice(0..<32), receiverToSender: okm.slice(32..<64), handshakeHash: hash)
    }
}

/// An authenticated, encrypted frame channel over a byte stream.
final class SecureChannel {
    let channel: ByteChannel
    private let sealer: AESGCMContext
    private let opener: AESGCMContext
    private var sendSequence: UInt64 = 0
    private var receiveSequence: UInt64 = 0
    private var sentTranscript: SHA256
    private var receivedTranscript: SHA256
    private var decoder = FrameDecoder()
    /// Bytes of payload sent and received (for progress).
    private(set) var payloadSent: UInt64 = 0
    /// In recipient mode, the sender's vault recipient public key (both ends know it
    /// after the handshake); nil in PSK mode.
    let senderKey: [UInt8]?

    private init(channel: ByteChannel, sendKey: SecretBytes, receiveKey: SecretBytes, handshakeHash: [UInt8], senderKey: [UInt8]?) throws {
        self.channel = channel
        sealer = try AESGCMContext(key: sendKey)
        opener = try AESGCMContext(key: receiveKey)
        sentTranscript = try SHA256()
        receivedTranscript = try SHA256()
        try sentTranscript.update(handshakeHash)
        try receivedTranscript.update(handshakeHash)
        self.senderKey = senderKey
    }

    /// Runs the handshake as `role` and returns the channel.
    static func establish(over channel: ByteChannel, role: Hello.Role, authentication: TransferAuthentication,
                          ephemeral fixedEphemeral: X25519.PrivateKey? = nil, random fixedRandom: [UInt8]? = nil) throws -> SecureChannel {
        let ephemeral = try fixedEphemeral ?? X25519.PrivateKey()
        let mode: Hello.Mode
        if case .presharedKey = authentication { mode = .presharedKey } else { mode = .recipient }
        switch (role, authentication) {
        case (.sender, .asRecipient), (.receiver, .toRecipient):
            throw TransferError(.keys, "the \(role) side cannot use that kind of key")
        default: break
        }
        var ownSenderKey = [UInt8](repeating: 0, count: 32)
        if case .toRecipient(_, let sender) = authentication { ownSenderKey = sender.publicKey.rawRepresentation }
        let mine = Hello(role: role, mode: mode, ephemeral: ephemeral.publicKey.rawRepresentation,
                         random: try fixedRandom ?? SecureRandom.bytes(count: 32), keyID: try Hello.keyID(for: authentication),
                         senderKey: ownSenderKey)
        try send(mine.bytes, over: channel, during: "the handshake")
        var received: [UInt8] = []
        while received.count < Hello.count {
            let piece: [UInt8]
            do {
                piece = try channel.receive(maximum: Hello.count - received.count)
            } catch {
                throw connectionError(error, during: "the handshake")
            }
            guard !piece.isEmpty else { throw TransferError(.truncated, "the peer closed the connection during the handshake") }
            received += piece
        }
        let theirs = try Hello.parse(received)
        guard theirs.role != role else { throw TransferError(.protocolMismatch, "both ends are \(role)s") }
        guard theirs.mode == mode else { throw TransferError(.keys, "the peer authenticates with a \(theirs.mode == .presharedKey ? "migration key" : "recipient key"); this end with the other kind") }
        guard constantTimeEquals(theirs.keyID, mine.keyID) else {
            throw TransferError(.keys, mode == .presharedKey
                ? "the peer holds another migration key"
                : "the transfer is addressed to another vault's recipient key (\(hexString(theirs.keyID.prefix(8)))…, this vault's is \(hexString(mine.keyID.prefix(8)))…)")
        }
        let theirEphemeral = try publicKey(theirs.ephemeral, what: "ephemeral key")
        let ephemeralShared = try agree(ephemeral, theirEphemeral, what: "ephemeral key")
        let first: SecretBytes
        var senderKey: [UInt8]?
        switch authentication {
        case .toRecipient(let recipient, let sender):
            // es || ss: only the holder of r can read; only the holder of s can send.
            first = SecretBytes(concatenating: [try agree(ephemeral, recipient, what: "recipient key"),
                                                try agree(sender, recipient, what: "recipient key")])
            senderKey = ownSenderKey
        case .asRecipient(let key, let accepted):
            if case .only(let keys) = accepted {
                guard keys.contains(where: { constantTimeEquals($0.rawRepresentation, theirs.senderKey) }) else {
                    throw TransferError(.keys, "the sender's vault key \(hexString(theirs.senderKey.prefix(8)))… is not one this receiver accepts")
                }
            }
            let sender = try publicKey(theirs.senderKey, what: "sender key")
            first = SecretBytes(concatenating: [try agree(key, theirEphemeral, what: "ephemeral key"),
                                                try agree(key, sender, what: "sender key")])
            senderKey = theirs.senderKey
        case .presharedKey(let psk): first = psk
        }
        let senderHello = role == .sender ? mine.bytes : theirs.bytes
        let receiverHello = role == .sender ? theirs.bytes : mine.bytes
        let keys = try SessionKeys.derive(first: first, ephemeralShared: ephemeralShared, senderHello: senderHello, receiverHello: receiverHello)
        return try SecureChannel(channel: channel,
                                 sendKey: role == .sender ? keys.senderToReceiver : keys.receiverToSender,
                                 receiveKey: role == .sender ? keys.receiverToSender : keys.senderToReceiver,
                                 handshakeHash: keys.handshakeHash, senderKey: senderKey)
    }

    private static func publicKey(_ bytes: [UInt8], what: String) throws -> X25519.PublicKey {
        do { return try X25519.PublicKey(rawRepresentation: bytes) } catch {
            throw TransferError(.keys, "the peer's \(what) is not an X25519 public key")
        }
    }

    /// X25519, with a small-order peer key (all-zero result) as a transfer error.
    private static func agree(_ key: X25519.PrivateKey, _ peer: X25519.PublicKey, what: String) throws -> SecretBytes {
        do { return try key.sharedSecret(with: peer) } catch {
            throw TransferError(.keys, "the peer's \(what) is a small-order point: no shared secret")
        }
    }

    /// The error for a failed read or write on the channel.
    static func connectionError(_ error: any Error, during: String) -> TransferError {
        if let error = error as? TransferError { return error }
        if let error = error as? SystemError, error.isTimeout {
            return TransferError(.timeout, "nothing moved on the connection for longer than its timeout during \(during): the peer stalled or the connection is gone",
                                 underlying: error)
        }
        return TransferError(.truncated, "the connection failed during \(during)", underlying: error)
    }

    private static func send(_ bytes: [UInt8], over channel: ByteChannel, during: String) throws {
        do { try channel.send(bytes) } catch { throw connectionError(error, during: during) }
    }

    static func nonce(_ sequence: UInt64) -> [UInt8] {
        [0, 0, 0, 0] + sequence.bigEndianBytes
    }

    /// The received transcript as it was before the FINAL frame (captured only then).
    private(set) var transcriptBeforeLastReceived: [UInt8] = []

    /// Sees every frame's plaintext as it is sent or received (for recording vectors;
    /// nil in normal use, so the data path copies nothing for it).
    var observer: ((TransferFrameEvent) -> Void)?

    /// The sequence number after `sequence`; the last one ends the session (2^64 frames
    /// are never sent, but no count may wrap).
    private static func nextSequence(_ sequence: UInt64) throws -> UInt64 {
        do { return try Checked.next(sequence, "the frame sequence number") } catch {
            throw TransferError(.sequence, "the session has used every frame sequence number", underlying: error)
        }
    }

    /// The hash of every frame sent so far (what the final frame carries).
    func sentTranscriptHash() throws -> [UInt8] { try sentTranscript.current() }
    func receivedTranscriptHash() throws -> [UInt8] { try receivedTranscript.current() }

    /// Sends a frame whose payload is a secret: it goes straight into the frame buffer,
    /// which sealing then overwrites with ciphertext.
    func send(_ type: FrameType, secret: SecretBytes) throws {
        var frame = [UInt8](repeating: 0, count: FrameHeader.count + secret.count + AESGCM.tagByteCount)
        secret.copy(into: &frame, at: FrameHeader.count)
        try send(type, frame: &frame, payloadCount: secret.count)
    }

    /// Overwrites a received frame's payload in the decoder's buffer (after a secret was
    /// taken out of it).
    func wipePayload(of frame: Received) {
        decoder.storage.replaceSubrange(frame.payload, with: repeatElement(0, count: frame.payload.count))
    }

    func send(_ type: FrameType, _ payload: [UInt8]) throws {
        var frame = [UInt8](repeating: 0, count: FrameHeader.count)
        frame.reserveCapacity(FrameHeader.count + payload.count + AESGCM.tagByteCount)
        frame += payload
        frame += [UInt8](repeating: 0, count: AESGCM.tagByteCount)
        try send(type, frame: &frame, payloadCount: payload.count)
    }

    /// Sends a frame built in place: `frame` holds 16 bytes of room for the header, then
    /// the payload, then 16 bytes of room for the tag (it may be longer; the rest is not
    /// sent). No copy of the payload is made.
    func send(_ type: FrameType, frame: inout [UInt8], payloadCount: Int) throws {
        guard payloadCount >= 0, payloadCount <= Int(FrameHeader.maximumBody) - AESGCM.tagByteCount else {
            throw TransferError(.tooLarge, "a \(type) payload of \(payloadCount) bytes does not fit in a frame")
        }
        let header = FrameHeader(bodyLength: UInt32(payloadCount + AESGCM.tagByteCount), type: type, sequence: sendSequence)
        let headerBytes = header.bytes
        frame.replaceSubrange(0..<FrameHeader.count, with: headerBytes)
        let plaintext = observer == nil ? nil : Array(frame[FrameHeader.count..<(FrameHeader.count + payloadCount)])
        try sealer.seal(rangeOf: &frame, start: FrameHeader.count, count: payloadCount, nonce: Self.nonce(sendSequence), authenticating: headerBytes)
        let end = FrameHeader.count + payloadCount + AESGCM.tagByteCount
        // The transcript covers each frame's header and tag: the tag authenticates the
        // ciphertext under the session key, so this binds every byte sent.
        try sentTranscript.update(headerBytes)
        try sentTranscript.update(frame, range: (end - AESGCM.tagByteCount)..<end)
        try Self.send(end == frame.count ? frame : Array(frame[0..<end]), over: channel, during: "frame \(sendSequence) (\(type))")
        sendSequence = try Self.nextSequence(sendSequence)
        payloadSent = payloadSent &+ UInt64(payloadCount)
        if let observer, let plaintext {
            observer(TransferFrameEvent(sent: true, type: type, payload: plaintext, transcript: try sentTranscript.current()))
        }
    }

    /// A received, opened frame: its payload is `payload(of:)` until the next receive.
    struct Received {
        let type: FrameType
        let sequence: UInt64
        let payload: Range<Int>
    }

    /// The next frame, opened in place; waits for it.
    func receiveInPlace() throws -> Received {
        while true {
            if let frame = try openNext() { return frame }
            let count: Int
            do {
                count = try decoder.fill { buffer, offset, maximum in try channel.receive(into: &buffer, at: offset, maximum: maximum) }
            } catch {
                throw Self.connectionError(error, during: "the wait for frame \(receiveSequence)")
            }
            guard count > 0 else {
                throw TransferError(.truncated, "the connection ended after \(receiveSequence) frames, before the transfer was complete")
            }
        }
    }

    /// The payload bytes of `frame` (valid until the next receive).
    func payload(of frame: Received) -> ArraySlice<UInt8> { decoder.storage[frame.payload] }

    /// The next frame with a copy of its payload.
    func receive() throws -> (type: FrameType, payload: [UInt8]) {
        let frame = try receiveInPlace()
        return (frame.type, Array(payload(of: frame)))
    }

    /// Frames that have arrived already, without waiting (nil if the channel cannot
    /// tell, or nothing complete has arrived). The sender reads the receiver's ACKs with
    /// this between data frames.
    func receiveIfReady() throws -> (type: FrameType, payload: [UInt8])? {
        while true {
            if let frame = try openNext() { return (frame.type, Array(payload(of: frame))) }
            let bytes: [UInt8]?
            // Small reads: this runs after every DATA frame, and what comes back between
            // them is ACKs of 40 bytes.
            do { bytes = try channel.receiveIfReady(maximum: 4096) } catch {
                throw Self.connectionError(error, during: "a read between frames")
            }
            guard let bytes else { return nil }
            guard !bytes.isEmpty else {
                throw TransferError(.truncated, "the peer closed the connection after \(receiveSequence) of its frames")
            }
            decoder.append(bytes)
        }
    }

    /// Opens the next complete frame in the decoder, if there is one.
    private func openNext() throws -> Received? {
        guard let (header, at) = try decoder.next() else { return nil }
        guard header.sequence == receiveSequence else {
            throw TransferError(.sequence, header.sequence < receiveSequence
                ? "frame \(header.sequence) arrived again (expected \(receiveSequence)): a replay"
                : "frame \(header.sequence) arrived where \(receiveSequence) was due: a frame was dropped or reordered")
        }
        let headerRange = at..<(at + FrameHeader.count)
        let payloadCount = Int(header.bodyLength) - AESGCM.tagByteCount
        let payloadStart = at + FrameHeader.count
        let tagRange = (payloadStart + payloadCount)..<(payloadStart + Int(header.bodyLength))
        let headerBytes = Array(decoder.storage[headerRange])
        // The transcript takes the tag as it arrived.
        if header.type == .final { transcriptBeforeLastReceived = try receivedTranscript.current() }
        try receivedTranscript.update(headerBytes)
        try receivedTranscript.update(decoder.storage, range: tagRange)
        do {
            try opener.open(rangeOf: &decoder.storage, start: payloadStart, count: payloadCount, nonce: Self.nonce(header.sequence), authenticating: headerBytes)
        } catch let error as CryptoError where error.code == .authenticationFailure {
            throw TransferError(.authenticationFailed, "frame \(header.sequence) (\(header.type)) does not authenticate: changed in transit, from another session, or a wrong key",
                                underlying: error)
        }
        receiveSequence = try Self.nextSequence(receiveSequence)
        let frame = Received(type: header.type, sequence: header.sequence, payload: payloadStart..<(payloadStart + payloadCount))
        observer?(TransferFrameEvent(sent: false, type: header.type, payload: Array(payload(of: frame)), transcript: nil))
        return frame
    }
}

/// A frame's plaintext as one end sent or received it (for recording vectors).
package struct TransferFrameEvent: Sendable {
    package let sent: Bool
    package let type: FrameType
    package let payload: [UInt8]
    /// For sent frames: the sender's transcript after this frame.
    package let transcript: [UInt8]?
}
