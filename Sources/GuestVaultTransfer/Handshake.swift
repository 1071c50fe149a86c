public import GuestVaultCrypto

/// How the two ends authenticate (docs/TRANSFER.md §2).
public enum TransferAuthentication: Sendable {
    /// Sender side: the destination vault's X25519 recipient public key
    /// (`guestvault vault recipient`). Only that vault can read the transfer.
    case toRecipient(X25519.PublicKey)
    /// Receiver side: this vault's recipient private key.
    case asRecipient(X25519.PrivateKey)
    /// Both sides: a migration key both vaults hold (at least 32 bytes). Authenticates
    /// both ends to each other.
    case presharedKey(SecretBytes)
}

/// The cleartext hello each side sends first (108 bytes).
struct Hello: Equatable {
    static let magic = Array("GVTX".utf8)
    static let version: UInt16 = 1
    static let count = 108

    enum Role: UInt8 { case sender = 1, receiver = 2 }
    enum Mode: UInt8 { case recipient = 1, presharedKey = 2 }

    var role: Role
    var mode: Mode
    var ephemeral: [UInt8]
    var random: [UInt8]
    var keyID: [UInt8]

    var bytes: [UInt8] {
        Self.magic + [UInt8(Self.version >> 8), UInt8(Self.version & 0xff), role.rawValue, mode.rawValue] + ephemeral + random + keyID + [0, 0, 0, 0]
    }

    static func parse(_ b: [UInt8]) throws -> Hello {
        guard b.count == count, Array(b[0..<4]) == magic else {
            throw TransferError(.protocolMismatch, "the peer is not a GuestVault transfer endpoint (bad hello)")
        }
        let version = UInt16(b[4]) << 8 | UInt16(b[5])
        guard version == Self.version else {
            throw TransferError(.protocolMismatch, "the peer speaks transfer version \(version); this build speaks \(Self.version)")
        }
        guard let role = Role(rawValue: b[6]), let mode = Mode(rawValue: b[7]) else {
            throw TransferError(.protocolMismatch, "the hello has an unknown role or mode")
        }
        guard b[104..<108].allSatisfy({ $0 == 0 }) else {
            throw TransferError(.protocolMismatch, "the peer asks for capabilities this build does not have")
        }
        return Hello(role: role, mode: mode, ephemeral: Array(b[8..<40]), random: Array(b[40..<72]), keyID: Array(b[72..<104]))
    }

    static let pskLabel = Array("GuestVault v1 psk id".utf8)

    static func keyID(for authentication: TransferAuthentication) throws -> [UInt8] {
        switch authentication {
        case .toRecipient(let key): try SHA256.hash(key.rawRepresentation)
        case .asRecipient(let key): try SHA256.hash(key.publicKey.rawRepresentation)
        case .presharedKey(let psk): try SHA256.hash(pskLabel + psk.unsafeCopyOfBytes())
        }
    }
}

/// The session keys: one per direction.
struct SessionKeys {
    let senderToReceiver: SecretBytes
    let receiverToSender: SecretBytes
    let handshakeHash: [UInt8]

    static let info = Array("GuestVault v1 transfer".utf8)

    /// HKDF-SHA256(IKM = first secret || X25519(ephemerals), salt = SHA-256(sender hello
    /// || receiver hello), info = "GuestVault v1 transfer", 64 bytes).
    static func derive(first: SecretBytes, ephemeralShared: SecretBytes, senderHello: [UInt8], receiverHello: [UInt8]) throws -> SessionKeys {
        let hash = try SHA256.hash(senderHello + receiverHello)
        let ikm = SecretBytes(copying: first.unsafeCopyOfBytes() + ephemeralShared.unsafeCopyOfBytes())
        let okm = try HKDF.deriveKey(inputKeyMaterial: ikm, salt: hash, info: info, outputByteCount: 64).unsafeCopyOfBytes()
        return SessionKeys(senderToReceiver: SecretBytes(copying: okm[0..<32]), receiverToSender: SecretBytes(copying: okm[32..<64]),
                           handshakeHash: hash)
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

    private init(channel: ByteChannel, sendKey: SecretBytes, receiveKey: SecretBytes, handshakeHash: [UInt8]) throws {
        self.channel = channel
        sealer = try AESGCMContext(key: sendKey)
        opener = try AESGCMContext(key: receiveKey)
        sentTranscript = try SHA256()
        receivedTranscript = try SHA256()
        try sentTranscript.update(handshakeHash)
        try receivedTranscript.update(handshakeHash)
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
        let mine = Hello(role: role, mode: mode, ephemeral: ephemeral.publicKey.rawRepresentation,
                         random: try fixedRandom ?? SecureRandom.bytes(count: 32), keyID: try Hello.keyID(for: authentication))
        try channel.send(mine.bytes)
        var received: [UInt8] = []
        while received.count < Hello.count {
            let piece = try channel.receive(maximum: Hello.count - received.count)
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
        let theirEphemeral = try X25519.PublicKey(rawRepresentation: theirs.ephemeral)
        let ephemeralShared = try ephemeral.sharedSecret(with: theirEphemeral)
        let first: SecretBytes
        switch authentication {
        case .toRecipient(let recipient): first = try ephemeral.sharedSecret(with: recipient)
        case .asRecipient(let key): first = try key.sharedSecret(with: theirEphemeral)
        case .presharedKey(let psk): first = psk
        }
        let senderHello = role == .sender ? mine.bytes : theirs.bytes
        let receiverHello = role == .sender ? theirs.bytes : mine.bytes
        let keys = try SessionKeys.derive(first: first, ephemeralShared: ephemeralShared, senderHello: senderHello, receiverHello: receiverHello)
        return try SecureChannel(channel: channel,
                                 sendKey: role == .sender ? keys.senderToReceiver : keys.receiverToSender,
                                 receiveKey: role == .sender ? keys.receiverToSender : keys.senderToReceiver,
                                 handshakeHash: keys.handshakeHash)
    }

    static func nonce(_ sequence: UInt64) -> [UInt8] {
        [0, 0, 0, 0] + (0..<8).map { UInt8(truncatingIfNeeded: sequence >> (56 - 8 * UInt64($0))) }
    }

    /// The received transcript as it was before the FINAL frame (captured only then).
    private(set) var transcriptBeforeLastReceived: [UInt8] = []

    /// Sees every frame's plaintext as it is sent or received (for recording vectors;
    /// nil in normal use, so the data path copies nothing for it).
    var observer: ((TransferFrameEvent) -> Void)?

    /// The hash of every frame sent so far (what the final frame carries).
    func sentTranscriptHash() throws -> [UInt8] { try sentTranscript.current() }
    func receivedTranscriptHash() throws -> [UInt8] { try receivedTranscript.current() }

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
        let header = FrameHeader(bodyLength: UInt32(payloadCount + AESGCM.tagByteCount), type: type, sequence: sendSequence)
        let headerBytes = header.bytes
        frame.replaceSubrange(0..<FrameHeader.count, with: headerBytes)
        let plaintext = observer == nil ? nil : Array(frame[FrameHeader.count..<(FrameHeader.count + payloadCount)])
        try sealer.seal(rangeOf: &frame, start: FrameHeader.count, count: payloadCount, nonce: Self.nonce(sendSequence), authenticating: headerBytes)
        let end = FrameHeader.count + payloadCount + AESGCM.tagByteCount
        // The transcript covers each frame's header and tag: the tag authenticates the
        // ciphertext under the session key, so this binds every byte sent.
        try sentTranscript.update(headerBytes)
        try sentTranscript.update(Array(frame[(end - AESGCM.tagByteCount)..<end]))
        try channel.send(end == frame.count ? frame : Array(frame[0..<end]))
        sendSequence += 1
        payloadSent += UInt64(payloadCount)
        if let observer, let plaintext {
            observer(TransferFrameEvent(sent: true, type: type, payload: plaintext, transcript: try sentTranscript.current()))
        }
    }

    /// The next frame; checks its sequence number and opens it.
    func receive() throws -> (type: FrameType, payload: [UInt8]) {
        while true {
            if let (headerBytes, header, body) = try decoder.next() {
                guard header.sequence == receiveSequence else {
                    throw TransferError(.sequence, header.sequence < receiveSequence
                        ? "frame \(header.sequence) arrived again (expected \(receiveSequence)): a replay"
                        : "frame \(header.sequence) arrived where \(receiveSequence) was due: a frame was dropped or reordered")
                }
                var payload = body
                let tag = Array(body.suffix(AESGCM.tagByteCount))
                do {
                    try opener.open(prefixOf: &payload, count: body.count - AESGCM.tagByteCount, nonce: Self.nonce(header.sequence), authenticating: headerBytes)
                } catch let error as CryptoError where error.code == .authenticationFailure {
                    throw TransferError(.authenticationFailed, "frame \(header.sequence) (\(header.type)) does not authenticate: changed in transit, from another session, or a wrong key")
                }
                payload.removeLast(AESGCM.tagByteCount)
                if header.type == .final { transcriptBeforeLastReceived = try receivedTranscript.current() }
                try receivedTranscript.update(headerBytes)
                try receivedTranscript.update(tag)
                receiveSequence += 1
                observer?(TransferFrameEvent(sent: false, type: header.type, payload: payload, transcript: nil))
                return (header.type, payload)
            }
            let bytes: [UInt8]
            do {
                bytes = try channel.receive(maximum: 256 << 10)
            } catch let error as TransferError {
                throw error
            } catch {
                throw TransferError(.truncated, "the connection failed after frame \(Int64(receiveSequence) - 1): \(error)")
            }
            guard !bytes.isEmpty else {
                throw TransferError(.truncated, "the connection ended after frame \(Int64(receiveSequence) - 1), before the transfer was complete")
            }
            decoder.append(bytes)
        }
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
