import GuestVaultCore
public import GuestVaultCrypto

/// GuestVault's sealed migration blob: a TPM state blob on the control channel
/// (GET/SET_STATEBLOB), sealed with AES-256-GCM under a key derived from the container's
/// DEK and bound to the VM, the container, the blob type, the container generation and
/// the blob set (the blobs of one migration). It travels inside swtpm's envelope with the
/// migration-encrypted flags set, so QEMU carries it unchanged. docs/MIGRATION-BLOB.md
/// describes it byte by byte; Vectors/formats/migration-blob/ holds an example.
///
/// Decoding treats the bytes as hostile: every length is checked against the bytes that
/// are there, the header is authenticated (it is the AAD) before anything is decrypted,
/// and errors are ``SwtpmFormatError``s naming the offset.
public enum SealedMigrationBlob {
    /// "GVMB".
    public static let magic: [UInt8] = [0x47, 0x56, 0x4d, 0x42]
    public static let version: UInt16 = 1
    /// The envelope's flags: migration data (0x04), migration-encrypted (0x02) with a
    /// 256-bit migration key (0x10). swtpm's own state-encryption flags stay clear.
    public static let envelopeFlags: SwtpmStateFile.Flags = [.migrationData, .migrationEncrypted, .migrationKey256]
    /// swtpm's 10-byte header and the 6-byte record header (tag 5) before the sealed blob.
    public static let envelopeByteCount = SwtpmStateFile.headerByteCount + SwtpmStateFile.recordHeaderByteCount
    /// The sealed blob's own header, from the magic to the ciphertext length.
    public static let sealedHeaderByteCount = 80
    public static let tagByteCount = AESGCM.tagByteCount
    /// Everything but the state itself: envelope, sealed header, tag.
    public static let overheadByteCount = envelopeByteCount + sealedHeaderByteCount + tagByteCount
    /// The largest state sealed: the blob stays within swtpm's file cap.
    public static let maximumPayloadByteCount = SwtpmStateFile.maximumFileByteCount - overheadByteCount

    /// The labels of the key derivation (docs/MIGRATION-BLOB.md, "Keys").
    public static let rootKeyLabel = Array("GuestVault v1 tpm migration root".utf8)
    public static let blobKeyLabel = Array("GuestVault v1 tpm migration blob".utf8)

    /// What a sealed blob is bound to; all of it is in the clear in the header, and all of
    /// it is authenticated (AAD) and in the key derivation.
    public struct Binding: Sendable, Hashable {
        /// The VM's UUID, 16 bytes.
        public var vm: [UInt8]
        /// The container's random id, 16 bytes.
        public var containerID: [UInt8]
        public var blob: TPMStateBlob
        /// The container generation when the blob set was started.
        public var generation: UInt64
        /// 16 random bytes shared by the blobs of one migration (one GET_STATEBLOB round).
        public var blobSetID: [UInt8]

        public init(vm: [UInt8], containerID: [UInt8], blob: TPMStateBlob, generation: UInt64, blobSetID: [UInt8]) {
            self.vm = vm
            self.containerID = containerID
            self.blob = blob
            self.generation = generation
            self.blobSetID = blobSetID
        }
    }

    /// An opened blob: what it was bound to and the libtpms state inside.
    public struct Opened: Sendable {
        public let binding: Binding
        public let payload: [UInt8]
    }

    /// The blob type numbers of the control channel (1 permanent, 2 volatile, 3 savestate).
    static func typeNumber(_ blob: TPMStateBlob) -> UInt16 {
        switch blob {
        case .permanent: 1
        case .volatile: 2
        case .saveState: 3
        }
    }

    static func blob(number: UInt16) -> TPMStateBlob? {
        switch number {
        case 1: .permanent
        case 2: .volatile
        case 3: .saveState
        default: nil
        }
    }

    // MARK: Keys

    /// The migration root key of a container: HKDF-SHA256(IKM = DEK, salt = container id,
    /// info = "GuestVault v1 tpm migration root"), 32 bytes. Only a holder of the DEK (a
    /// host that has the container, or was sent it) can make it.
    public static func rootKey(dek: SecretBytes, containerID: [UInt8]) throws -> SecretBytes {
        try HKDF.deriveKey(inputKeyMaterial: dek, salt: containerID, info: rootKeyLabel, outputByteCount: 32)
    }

    /// The key of one blob: HKDF-SHA256(IKM = root key, no salt, info = label || 0x00 ||
    /// VM id || container id || blob type (u16) || generation (u64) || blob set id).
    static func blobKey(root: SecretBytes, _ binding: Binding) throws -> SecretBytes {
        var info = ByteWriter(capacity: blobKeyLabel.count + 59)
        info.raw(blobKeyLabel)
        info.u8(0)
        info.raw(binding.vm)
        info.raw(binding.containerID)
        info.u16(typeNumber(binding.blob))
        info.u64(binding.generation)
        info.raw(binding.blobSetID)
        return try HKDF.deriveKey(inputKeyMaterial: root, info: info.bytes, outputByteCount: 32)
    }

    // MARK: Sealing

    /// Seals `payload` (a libtpms state blob) into the control-channel blob. `nonce` is
    /// for known-answer vectors only; leave it nil (12 random bytes).
    public static func seal(_ payload: [UInt8], binding: Binding, rootKey: SecretBytes, nonce: [UInt8]? = nil) throws -> [UInt8] {
        guard binding.vm.count == 16, binding.containerID.count == 16, binding.blobSetID.count == 16 else {
            throw SwtpmFormatError(.malformed, file: "(new sealed migration blob)", offset: nil,
                                   "the VM id, container id and blob set id are 16 bytes each")
        }
        guard payload.count <= maximumPayloadByteCount else {
            throw SwtpmFormatError(.tooLarge, file: "(new sealed migration blob)", offset: nil,
                                   "the \(binding.blob) state is \(payload.count) bytes; a sealed blob holds at most \(maximumPayloadByteCount)")
        }
        let nonce = try nonce ?? SecureRandom.bytes(count: AESGCM.nonceByteCount)
        let total = overheadByteCount + payload.count
        var out = ByteWriter(capacity: total)
        out.u8(SwtpmStateFile.formatVersion)
        out.u8(1)
        out.u16(UInt16(SwtpmStateFile.headerByteCount))
        out.u16(envelopeFlags.rawValue)
        out.u32(UInt32(total))
        out.u16(SwtpmStateFile.Tag.encryptedMigrationData.rawValue)
        out.u32(UInt32(total - envelopeByteCount))
        out.raw(magic)
        out.u16(version)
        out.u16(typeNumber(binding.blob))
        out.raw(binding.vm)
        out.raw(binding.containerID)
        out.u64(binding.generation)
        out.raw(binding.blobSetID)
        out.raw(nonce)
        out.u32(UInt32(payload.count))
        let aad = out.bytes
        let key = try blobKey(root: rootKey, binding)
        out.raw(try AESGCM.seal(payload, key: key, nonce: nonce, authenticating: aad))
        return out.bytes
    }

    // MARK: Reading

    /// Whether `bytes` look like a sealed blob (the envelope with the migration-encrypted
    /// flags, one record of tag 5, the magic): decides which reader gets them. swtpm's
    /// own migration-encrypted blobs have the same flags but an HMAC and an IV record,
    /// and no magic.
    public static func isSealed(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= envelopeByteCount + magic.count, bytes[0] == SwtpmStateFile.formatVersion else { return false }
        let flags = UInt16(bytes[4]) << 8 | UInt16(bytes[5])
        let tag = UInt16(bytes[10]) << 8 | UInt16(bytes[11])
        return flags & SwtpmStateFile.Flags.migrationEncrypted.rawValue != 0
            && tag == SwtpmStateFile.Tag.encryptedMigrationData.rawValue
            && Array(bytes[envelopeByteCount..<(envelopeByteCount + magic.count)]) == magic
    }

    /// Reads the header without a key: what the blob says it is bound to. Nothing here is
    /// trusted until ``open(_:rootKey:file:)`` has checked the tag over it.
    public static func peek(_ bytes: [UInt8], file: String) throws -> Binding {
        try parse(bytes, file: file).binding
    }

    /// Checks the envelope and the header, derives the blob's key from `rootKey` and the
    /// header, and opens it: the tag covers every byte before the ciphertext.
    public static func open(_ bytes: [UInt8], rootKey: SecretBytes, file: String) throws -> Opened {
        let parsed = try parse(bytes, file: file)
        let key = try blobKey(root: rootKey, parsed.binding)
        let aad = Array(bytes[..<parsed.ciphertextOffset])
        do {
            let payload = try AESGCM.open(Array(bytes[parsed.ciphertextOffset...]), key: key, nonce: parsed.nonce, authenticating: aad)
            return Opened(binding: parsed.binding, payload: payload)
        } catch {
            throw SwtpmFormatError(.authenticationFailed, file: file, offset: parsed.ciphertextOffset,
                                   "the sealed \(parsed.binding.blob) blob does not authenticate: it was changed or damaged, or it was sealed under another container's key. Nothing was decrypted",
                                   underlying: error)
        }
    }

    struct Parsed {
        let binding: Binding
        let nonce: [UInt8]
        let ciphertextOffset: Int
    }

    static func parse(_ bytes: [UInt8], file: String) throws -> Parsed {
        guard bytes.count <= SwtpmStateFile.maximumFileByteCount else {
            throw SwtpmFormatError(.tooLarge, file: file, offset: SwtpmStateFile.maximumFileByteCount,
                                   "the blob is \(bytes.count) bytes; state blobs here are at most \(SwtpmStateFile.maximumFileByteCount)")
        }
        let header = try SwtpmStateFile.parseHeader(bytes, file: file)
        guard header.flags == envelopeFlags else {
            throw SwtpmFormatError(.badHeader, file: file, offset: 4,
                                   "a sealed migration blob's envelope flags are 0x\(String(envelopeFlags.rawValue, radix: 16)), not 0x\(String(header.flags.rawValue, radix: 16))")
        }
        return try SwtpmStateFile.reading(file) { () throws(ByteCodecError) -> Parsed in
            var r = ByteReader(bytes, from: SwtpmStateFile.headerByteCount, subject: file)
            let tag = try r.u16("record tag")
            guard tag == SwtpmStateFile.Tag.encryptedMigrationData.rawValue else {
                throw r.malformed("record tag", "a sealed migration blob holds one record of tag 5, not \(tag)")
            }
            let length = try r.u32("record length")
            guard Int(length) == r.remaining else {
                throw r.malformed("record length", "the record says \(length) bytes, but \(r.remaining) follow")
            }
            guard Array(try r.take(magic.count, "magic")) == magic else {
                throw r.malformed("magic", "not \"GVMB\": this is not a GuestVault sealed migration blob")
            }
            let version = try r.u16("version")
            guard version == Self.version else {
                throw r.malformed("version", "version \(version); this reader knows version \(Self.version)")
            }
            let number = try r.u16("blob type")
            guard let blob = Self.blob(number: number) else {
                throw r.malformed("blob type", "blob type \(number) (1 permanent, 2 volatile, 3 savestate)")
            }
            let vm = try r.array(16, "VM id")
            let containerID = try r.array(16, "container id")
            let generation = try r.u64("generation")
            let setID = try r.array(16, "blob set id")
            let nonce = try r.array(AESGCM.nonceByteCount, "nonce")
            let count = try r.u32("ciphertext length")
            guard r.remaining >= tagByteCount, Int(count) == r.remaining - tagByteCount else {
                throw r.malformed("ciphertext length", "the header says \(count) bytes of ciphertext and a \(tagByteCount)-byte tag, but \(r.remaining) bytes follow")
            }
            return Parsed(binding: Binding(vm: vm, containerID: containerID, blob: blob, generation: generation, blobSetID: setID),
                          nonce: nonce, ciphertextOffset: r.offset)
        }
    }
}
