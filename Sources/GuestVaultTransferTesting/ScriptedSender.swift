import Foundation
import GuestVaultCore
public import GuestVaultCrypto
public import GuestVaultKeys
import GuestVaultState
public import GuestVaultTransfer

/// A transfer sender written from docs/TRANSFER.md alone (hello, key schedule, frame
/// sealing, transcript), on the public crypto API only, that sends whatever it is
/// scripted to: well-formed frames with wrong contents, frames out of order, raw bytes.
/// For tests and fuzzers of `ContainerTransfer.receive`, which they drive through
/// ``channel(_:)``; an authenticated but hostile or broken sender, which tampering with
/// a real sender's bytes in transit cannot produce.
///
/// Everything runs on the receiver's thread: the channel answers the receiver's hello
/// with the sender's, derives the session keys, and from then on hands out the scripted
/// bytes; what the receiver sends back is opened and kept in ``replies``.
public final class ScriptedSender {
    /// One thing the sender does, in order.
    public enum Step: Sendable {
        /// A frame with the next sequence number.
        case frame(FrameType, [UInt8])
        /// A frame with this sequence number (the count goes on from it).
        case frameNumbered(FrameType, [UInt8], sequence: UInt64)
        /// FINAL for a container of `length` bytes, sent whole in this session: the
        /// length, SHA-256 of no bytes, and the transcript of the frames sent so far.
        case final(length: UInt64)
        /// Bytes as they are, outside any frame.
        case raw([UInt8])
    }

    /// A frame the receiver sent, opened (nil type: it did not open or parse).
    public struct Reply: Sendable {
        public let type: FrameType?
        public let payload: [UInt8]
    }

    public enum Authentication {
        /// Recipient mode: the receiver's public key and the sender's static key.
        case recipient(X25519.PublicKey, sender: X25519.PrivateKey)
        case presharedKey(SecretBytes)
    }

    let authentication: Authentication
    let ephemeral: X25519.PrivateKey
    let random: [UInt8]

    /// What the receiver sent after its hello, opened in order.
    public private(set) var replies: [Reply] = []

    public init(_ authentication: Authentication, ephemeral: X25519.PrivateKey? = nil, random: [UInt8]? = nil) throws {
        self.authentication = authentication
        self.ephemeral = try ephemeral ?? X25519.PrivateKey()
        self.random = try random ?? SecureRandom.bytes(count: 32)
    }

    /// The sender's 140-byte hello (docs/TRANSFER.md §2.1).
    public func hello() throws -> [UInt8] {
        var bytes = Array("GVTX".utf8) + [0, 1, 1]
        switch authentication {
        case .recipient(let recipient, let sender):
            bytes += [1] + ephemeral.publicKey.rawRepresentation + random + (try SHA256.hash(recipient.rawRepresentation))
                + sender.publicKey.rawRepresentation
        case .presharedKey(let psk):
            bytes += [2] + ephemeral.publicKey.rawRepresentation + random
                + (try SHA256.hash(Array("GuestVault v1 psk id".utf8) + psk.unsafeCopyOfBytes())) + [UInt8](repeating: 0, count: 32)
        }
        return bytes + [0, 0, 0, 0]
    }

    /// A channel to hand `ContainerTransfer.receive`: it carries the sender's side of
    /// `steps`, then the end of the stream.
    public func channel(_ steps: [Step]) throws -> ByteChannel { Channel(sender: self, steps: steps, hello: try hello()) }

    // MARK: The session

    final class Keys {
        let send: AESGCMContext
        let receive: AESGCMContext
        var transcript: SHA256

        init(send: AESGCMContext, receive: AESGCMContext, transcript: consuming SHA256) {
            self.send = send
            self.receive = receive
            self.transcript = transcript
        }
    }

    /// docs/TRANSFER.md §2.3, from both hellos.
    func keys(senderHello: [UInt8], receiverHello: [UInt8]) throws -> Keys {
        let theirEphemeral = try X25519.PublicKey(rawRepresentation: Array(receiverHello[8..<40]))
        var parts: [SecretBytes]
        switch authentication {
        case .recipient(let recipient, let sender):
            parts = [try ephemeral.sharedSecret(with: recipient), try sender.sharedSecret(with: recipient)]
        case .presharedKey(let psk):
            parts = [psk]
        }
        parts.append(try ephemeral.sharedSecret(with: theirEphemeral))
        let hash = try SHA256.hash(senderHello + receiverHello)
        let okm = try HKDF.deriveKey(inputKeyMaterial: SecretBytes(concatenating: parts), salt: hash,
                                     info: Array("GuestVault v1 transfer".utf8), outputByteCount: 64)
        var transcript = try SHA256()
        try transcript.update(hash)
        return Keys(send: try AESGCMContext(key: okm.slice(0..<32)), receive: try AESGCMContext(key: okm.slice(32..<64)), transcript: transcript)
    }

    static func header(bodyLength: Int, type: UInt8, sequence: UInt64) -> [UInt8] {
        var out = ByteWriter(capacity: 16)
        out.u32(UInt32(truncatingIfNeeded: bodyLength))
        out.raw([type, 0, 0, 0])
        out.u64(sequence)
        return out.bytes
    }

    static func nonce(_ sequence: UInt64) -> [UInt8] { [0, 0, 0, 0] + sequence.bigEndianBytes }

    /// The sender's stream after its hello: every step, sealed.
    func stream(_ steps: [Step], keys: Keys) throws -> [UInt8] {
        var out: [UInt8] = []
        var sequence: UInt64 = 0
        func seal(_ type: FrameType, _ payload: [UInt8], _ number: UInt64) throws {
            let header = Self.header(bodyLength: payload.count + 16, type: type.rawValue, sequence: number)
            var body = payload
            let tag = try keys.send.seal(inPlace: &body, nonce: Self.nonce(number), authenticating: header)
            try keys.transcript.update(header)
            try keys.transcript.update(tag)
            out += header + body + tag
            sequence = number &+ 1
        }
        for step in steps {
            switch step {
            case .frame(let type, let payload): try seal(type, payload, sequence)
            case .frameNumbered(let type, let payload, let number): try seal(type, payload, number)
            case .final(let length):
                let payload = length.bigEndianBytes + (try SHA256.hash([])) + (try keys.transcript.current())
                try seal(.final, payload, sequence)
            case .raw(let bytes): out += bytes
            }
        }
        return out
    }

    /// Opens the receiver's frames (after its hello) into ``replies``.
    func takeReplies(_ bytes: [UInt8], keys: Keys) {
        var at = 0
        var sequence: UInt64 = 0
        while bytes.count - at >= 16 {
            let length = Int(UInt32(bigEndianBytes: bytes[at..<(at + 4)]) ?? 0)
            guard length >= 16, bytes.count - at - 16 >= length else { break }
            let header = Array(bytes[at..<(at + 16)])
            var body = Array(bytes[(at + 16)..<(at + 16 + length - 16)])
            let tag = Array(bytes[(at + length)..<(at + 16 + length)])
            do {
                try keys.receive.open(inPlace: &body, tag: tag, nonce: Self.nonce(sequence), authenticating: header)
                replies.append(Reply(type: FrameType(rawValue: header[4]), payload: body))
            } catch {
                replies.append(Reply(type: nil, payload: header + body + tag))
            }
            sequence &+= 1
            at += 16 + length
        }
    }

    final class Channel: ByteChannel {
        let sender: ScriptedSender
        let steps: [Step]
        let senderHello: [UInt8]
        /// The sender's hello, then (once the receiver's hello is in) the script.
        var outgoing: [UInt8]
        var position = 0
        var fromReceiver: [UInt8] = []
        var keys: Keys?
        var answered = false

        init(sender: ScriptedSender, steps: [Step], hello: [UInt8]) {
            self.sender = sender
            self.steps = steps
            senderHello = hello
            outgoing = hello
        }

        func send(_ bytes: [UInt8]) throws {
            fromReceiver += bytes
            if !answered, fromReceiver.count >= 140 {
                answered = true
                // The receiver's hello: seal the script under the session keys. A
                // receiver hello they cannot come from (a test of the handshake) leaves
                // the sender silent after its hello.
                if let derived = try? sender.keys(senderHello: senderHello, receiverHello: Array(fromReceiver[0..<140])),
                   let stream = try? sender.stream(steps, keys: derived) {
                    outgoing += stream
                    keys = derived
                }
            }
            if let keys {
                sender.replies = []
                sender.takeReplies(Array(fromReceiver.dropFirst(140)), keys: keys)
            }
        }

        func receive(maximum: Int) throws -> [UInt8] {
            let count = min(maximum, outgoing.count - position)
            defer { position += count }
            return Array(outgoing[position..<(position + count)])
        }
    }
}

extension ScriptedSender {
    /// What a sender of the container at `path` (opened with `vault`) puts in its
    /// frames: the MANIFEST payload for `transferID`, the KEY payload, and the bytes.
    public struct Source: Sendable {
        public let manifest: [UInt8]
        public let key: [UInt8]
        public let bytes: [UInt8]

        public init(containerAt path: String, vault: KeyVault, transferID: [UInt8] = [UInt8](repeating: 0x5a, count: 16)) throws {
            let container = try GuestStateContainer.open(at: path)
            try container.unlock(with: UnlockCredentials(vault: vault))
            bytes = try container.rawBytes(at: 0, count: Int(container.logEnd))
            key = try container.protectionKey().unsafeCopyOfBytes()
            manifest = TransferManifest(transferID: transferID, vm: container.vm, containerID: container.containerID,
                                        generation: container.generation, length: UInt64(bytes.count)).bytes
        }

        public init(manifest: [UInt8], key: [UInt8], bytes: [UInt8]) {
            self.manifest = manifest
            self.key = key
            self.bytes = bytes
        }

        /// A well-formed new transfer: MANIFEST, KEY, DATA frames of `chunk` bytes, FINAL.
        public func steps(chunk: Int = 1 << 20) -> [Step] {
            var steps: [Step] = [.frame(.manifest, manifest), .frame(.key, key)]
            var offset = 0
            while offset < bytes.count {
                let count = min(chunk, bytes.count - offset)
                steps.append(.frame(.data, UInt64(offset).bigEndianBytes + bytes[offset..<(offset + count)]))
                offset += count
            }
            return steps + [.final(length: UInt64(bytes.count))]
        }
    }
}
