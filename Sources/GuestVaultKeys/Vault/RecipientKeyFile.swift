import GuestVaultCore
import GuestVaultCrypto
import GuestVaultSystem

/// `recipient.key`: the vault's X25519 private key sealed with AES-256-GCM under
/// `deriveBlock("GuestVault v1 recipient key seal", "")`.
///
/// ```
/// 0   4   magic "GVRC"
/// 4   1   version 1
/// 5   3   zero
/// 8   12  nonce
/// 20  48  sealed private key (32) and tag (16); AAD = bytes 0..<8 || root key id (16)
/// ```
enum RecipientKeyFile {
    static let magic = Array("GVRC".utf8)
    static let version: UInt8 = 1
    static let count = 68

    static var header: [UInt8] {
        var writer = ByteWriter(capacity: 8)
        writer.raw(magic)
        writer.u8(version)
        writer.raw([0, 0, 0])
        return writer.bytes
    }

    static func loadOrCreate(at path: String, backend: any RootKeyBackend, rootKeyID: [UInt8]) throws -> X25519.PrivateKey {
        let sealKey = try backend.deriveBlock(label: KeyLabels.recipientSeal, context: [])
        if FileSystem.exists(path) {
            return try load(at: path, sealKey: sealKey, rootKeyID: rootKeyID)
        }
        let key = try X25519.PrivateKey()
        let nonce = try SecureRandom.bytes(count: AESGCM.nonceByteCount)
        var plain = key.rawRepresentation.unsafeCopyOfBytes()
        defer { SecretFile.zero(&plain) }
        var writer = ByteWriter(capacity: count)
        writer.raw(header)
        writer.raw(nonce)
        writer.raw(try AESGCM.seal(plain, key: sealKey, nonce: nonce, authenticating: header + rootKeyID))
        do {
            // Linked into place, never replacing: when two processes make the key at
            // once, one wins and the other loads the winner's.
            try DurableFile.write(writer.bytes, to: path, mode: FileSystem.privateFileMode, .creatingNew)
        } catch let error as SystemError where error.code == .fileExists {
            return try load(at: path, sealKey: sealKey, rootKeyID: rootKeyID)
        } catch {
            throw VaultError.file(path, "could not write the recipient key", error)
        }
        return key
    }

    static func load(at path: String, sealKey: SecretBytes, rootKeyID: [UInt8]) throws -> X25519.PrivateKey {
        let bytes = try SecretFile.readPrivate(path, what: "recipient key", limit: 4096, sealed: true,
                                               missing: VaultError(.vaultNotFound, subject: path, reason: "the recipient key file went away while it was read"))
        var reader = ByteReader(bytes, subject: path)
        let fileHeader: [UInt8], nonce: [UInt8], sealed: [UInt8]
        do {
            fileHeader = try reader.array(8, "header")
            nonce = try reader.array(AESGCM.nonceByteCount, "nonce")
            sealed = try reader.array(32 + AESGCM.tagByteCount, "sealed key")
            try reader.expectEnd("recipient key file")
        } catch {
            throw VaultError(.corrupt, subject: path, reason: "not a recipient key file of the expected size (\(count) bytes)", underlying: error)
        }
        guard fileHeader == header else {
            throw VaultError(.corrupt, subject: path, reason: "not a recipient key file of version \(version)")
        }
        do {
            var raw = try AESGCM.open(sealed, key: sealKey, nonce: nonce, authenticating: header + rootKeyID)
            defer { SecretFile.zero(&raw) }
            return try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: raw))
        } catch let error as CryptoError where error.code == .authenticationFailure {
            throw VaultError(.corrupt, subject: path, reason: "the recipient key does not verify under this vault's root key", underlying: error)
        }
    }
}
