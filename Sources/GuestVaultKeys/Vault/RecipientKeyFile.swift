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
    static let count = 68

    static func loadOrCreate(at path: String, backend: any RootKeyBackend, rootKeyID: [UInt8]) throws -> X25519.PrivateKey {
        let sealKey = try backend.deriveBlock(label: KeyLabels.recipientSeal, context: [])
        let header = magic + [1, 0, 0, 0]
        if FileSystem.exists(path) {
            let bytes = try SecretFile.readPrivate(path, what: "recipient key", limit: 4096, sealed: true,
                                                   missing: VaultError(.notFound, subject: path, reason: "the recipient key file went away while it was read"))
            guard bytes.count == count, Array(bytes[0..<8]) == header else {
                throw VaultError(.corrupt, subject: path, reason: "not a recipient key file of the expected size and version")
            }
            do {
                var raw = try AESGCM.open(Array(bytes[20...]), key: sealKey, nonce: Array(bytes[8..<20]), authenticating: header + rootKeyID)
                defer { for index in raw.indices { raw[index] = 0 } }
                return try X25519.PrivateKey(rawRepresentation: SecretBytes(copying: raw))
            } catch let error as CryptoError where error.code == .authenticationFailure {
                throw VaultError(.corrupt, subject: path, reason: "the recipient key does not verify under this vault's root key")
            }
        }
        let key = try X25519.PrivateKey()
        let nonce = try SecureRandom.bytes(count: 12)
        var plain = key.rawRepresentation.unsafeCopyOfBytes()
        defer { for index in plain.indices { plain[index] = 0 } }
        let sealed = try AESGCM.seal(plain, key: sealKey, nonce: nonce, authenticating: header + rootKeyID)
        do {
            try FileSystem.writeAtomically(header + nonce + sealed, to: path)
        } catch {
            throw VaultError(.io, subject: path, reason: "could not write: \(error)")
        }
        return key
    }
}
