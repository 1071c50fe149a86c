import FoundationEssentials
import GuestVaultCore
import GuestVaultCrypto

/// The keys of an unlocked container, all derived from its DEK with the SP 800-108
/// counter KDF (HMAC-SHA256). See docs/FORMAT.md §5.
final class EntryKeys {
    static let entryLabel = Array("GuestVault v1 entry key".utf8)
    static let manifestLabel = Array("GuestVault v1 manifest".utf8)

    let dek: SecretBytes
    private let kdf: KBKDFContext
    let manifestKey: SecretBytes

    init(dek: SecretBytes, containerID: [UInt8]) throws {
        self.dek = dek
        kdf = try KBKDFContext(key: dek)
        manifestKey = try kdf.deriveKey(label: Self.manifestLabel, context: containerID, outputByteCount: 32)
    }

    /// The AES-256-GCM key of one sealed entry version: unique per random 16-byte salt, so
    /// nonces never repeat under a key however many entries the DEK seals.
    func entryKey(salt: [UInt8]) throws -> SecretBytes {
        try kdf.deriveKey(label: Self.entryLabel, context: salt, outputByteCount: 32)
    }
}

/// What every sealed piece of an entry is bound to (its associated data).
struct EntryBinding: Sendable {
    var vm: UUID
    var containerID: [UInt8]
    var name: String
    var generation: UInt64

    static let blobPrefix = Array("GuestVault v1 blob".utf8)
    static let streamPrefix = Array("GuestVault v1 stream".utf8)

    private func common(_ prefix: [UInt8]) -> ByteWriter {
        var w = ByteWriter(capacity: 96)
        w.raw(prefix)
        w.u16(ContainerFormat.version)
        w.raw(uuidBytes(vm))
        w.raw(containerID)
        w.u64(generation)
        // Names are at most 255 bytes (checked before anything is sealed or read).
        w.prefixed(Array(self.name.utf8), UInt8.self)
        return w
    }

    /// AAD of a blob: "GuestVault v1 blob" || version u16 || VM UUID || container id ||
    /// generation u64 || name length u8 || name.
    var blobAAD: [UInt8] { common(Self.blobPrefix).bytes }

    /// AAD of a stream chunk: "GuestVault v1 stream" || version u16 || VM UUID ||
    /// container id || generation u64 || name length u8 || name || chunk index u64 ||
    /// last-chunk flag u8.
    func chunkAAD(index: UInt64, last: Bool) -> [UInt8] {
        var w = common(Self.streamPrefix)
        w.u64(index)
        w.u8(last ? 1 : 0)
        return w.bytes
    }
}

/// Sealed blobs: one AES-256-GCM message, key from the entry salt, nonce all zero
/// (the key is used once). Body on disk: ciphertext || tag.
enum SealedBlob {
    static let nonce = [UInt8](repeating: 0, count: 12)

    static func seal(_ plaintext: [UInt8], keys: EntryKeys, salt: [UInt8], binding: EntryBinding) throws -> (body: [UInt8], tag: [UInt8]) {
        let context = try AESGCMContext(key: keys.entryKey(salt: salt))
        var body = plaintext
        let tag = try context.seal(inPlace: &body, nonce: nonce, authenticating: binding.blobAAD)
        body.append(contentsOf: tag)
        return (body, tag)
    }

    static func open(_ body: [UInt8], keys: EntryKeys, salt: [UInt8], binding: EntryBinding, expectedTag: [UInt8]) throws -> [UInt8] {
        guard body.count >= AESGCM.tagByteCount else {
            throw ContainerError(.truncated, subject: "entry \(binding.name)", reason: "sealed body is \(body.count) bytes")
        }
        let tag = Array(body.suffix(AESGCM.tagByteCount))
        guard constantTimeEquals(tag, expectedTag) else {
            throw ContainerError(.authenticationFailed, subject: "entry \(binding.name)",
                                 reason: "the sealed bytes are not the ones the commit names (changed or swapped)")
        }
        var plaintext = Array(body.dropLast(AESGCM.tagByteCount))
        let context = try AESGCMContext(key: keys.entryKey(salt: salt))
        do {
            try context.open(inPlace: &plaintext, tag: tag, nonce: nonce, authenticating: binding.blobAAD)
        } catch let error as CryptoError where error.code == .authenticationFailure {
            throw ContainerError(.authenticationFailed, subject: "entry \(binding.name)",
                                 reason: "does not authenticate: changed, or moved from another container, VM or generation",
                                 underlying: error)
        }
        return plaintext
    }
}
