public import FoundationEssentials
public import GuestVaultCrypto

/// One key protector slot: the container's guest state protection key (DEK, 32 bytes)
/// wrapped one way. The byte layout of each kind is in docs/KEYS.md.
public enum KeyProtector: Sendable, Hashable {
    /// Wrapped by the VM's key-encryption key from the vault with root key id `rootKeyID`
    /// at key epoch `epoch` (RFC 5649 key wrap).
    case vault(rootKeyID: [UInt8], epoch: UInt32, wrappedKey: [UInt8])
    /// Wrapped for the holder of an X25519 private key (recovery or backup): an
    /// ephemeral key agreement, HKDF-SHA256, then RFC 5649 key wrap.
    case recipient(recipient: [UInt8], ephemeral: [UInt8], wrappedKey: [UInt8])
    /// Wrapped under scrypt(passphrase, salt) (RFC 5649 key wrap).
    case passphrase(log2N: UInt8, r: UInt8, p: UInt8, salt: [UInt8], wrappedKey: [UInt8])

    public enum Kind: UInt8, Sendable, CaseIterable, CustomStringConvertible {
        case vault = 1
        case recipient = 2
        case passphrase = 3

        public var description: String {
            switch self {
            case .vault: "vault"
            case .recipient: "recipient"
            case .passphrase: "passphrase"
            }
        }
    }

    public var kind: Kind {
        switch self {
        case .vault: .vault
        case .recipient: .recipient
        case .passphrase: .passphrase
        }
    }

    /// A one-line description (no secrets): kind and what opens it.
    public var summary: String {
        switch self {
        case .vault(let id, let epoch, _): "vault \(hexString(id)) epoch \(epoch)"
        case .recipient(let recipient, _, _): "recipient \(hexString(recipient))"
        case .passphrase(let log2N, let r, let p, _, _): "passphrase (scrypt N=2^\(log2N) r=\(r) p=\(p))"
        }
    }

    static let wrappedDEKCount = 40
    static let recipientInfo = Array("GuestVault v1 recipient slot".utf8)

    // MARK: Wrapping

    /// Wraps `dek` under `vault`'s KEK for `vm` at `epoch`.
    public static func wrapForVault(_ dek: SecretBytes, vault: KeyVault, vm: UUID, epoch: UInt32) throws -> KeyProtector {
        try checkDEK(dek)
        let kek = try vault.kek(vm: vm, epoch: epoch)
        return .vault(rootKeyID: vault.rootKeyID, epoch: epoch, wrappedKey: try AESKeyWrap.wrapWithPadding(dek, kek: kek))
    }

    /// Wraps `dek` for the holder of `recipient`'s private key. `ephemeral` is for vectors
    /// only; normally a fresh key is made.
    public static func wrapForRecipient(
        _ dek: SecretBytes, recipient: X25519.PublicKey, vm: UUID, ephemeral: X25519.PrivateKey? = nil
    ) throws -> KeyProtector {
        try checkDEK(dek)
        let ephemeral = try ephemeral ?? X25519.PrivateKey()
        let kek = try recipientKEK(shared: ephemeral.sharedSecret(with: recipient), ephemeral: ephemeral.publicKey.rawRepresentation,
                                   recipient: recipient.rawRepresentation, vm: vm)
        return .recipient(recipient: recipient.rawRepresentation, ephemeral: ephemeral.publicKey.rawRepresentation,
                          wrappedKey: try AESKeyWrap.wrapWithPadding(dek, kek: kek))
    }

    /// Wraps `dek` under a passphrase. `salt` is for vectors only.
    public static func wrapForPassphrase(
        _ dek: SecretBytes, passphrase: SecretBytes, parameters: PasswordKDF.ScryptParameters = .interactive, salt: [UInt8]? = nil
    ) throws -> KeyProtector {
        try checkDEK(dek)
        guard passphrase.count > 0 else {
            throw VaultError(.invalidArgument, subject: "passphrase slot", reason: "the passphrase is empty")
        }
        guard parameters.n.nonzeroBitCount == 1, parameters.n >= 2, parameters.r <= 255, parameters.p <= 255 else {
            throw VaultError(.invalidArgument, subject: "passphrase slot", reason: "scrypt N must be a power of two, r and p at most 255")
        }
        let salt = try salt ?? SecureRandom.bytes(count: 32)
        let kek = try PasswordKDF.scrypt(passphrase: passphrase, salt: salt, parameters: parameters, outputByteCount: 32)
        return .passphrase(log2N: UInt8(parameters.n.trailingZeroBitCount), r: UInt8(parameters.r), p: UInt8(parameters.p),
                           salt: salt, wrappedKey: try AESKeyWrap.wrapWithPadding(dek, kek: kek))
    }

    /// The recipient slot's wrapping key: HKDF-SHA256 with IKM = the X25519 shared
    /// secret, salt = ephemeral public || recipient public, info = "GuestVault v1
    /// recipient slot" || VM UUID, 32 bytes.
    static func recipientKEK(shared: SecretBytes, ephemeral: [UInt8], recipient: [UInt8], vm: UUID) throws -> SecretBytes {
        try HKDF.deriveKey(inputKeyMaterial: shared, salt: ephemeral + recipient, info: recipientInfo + KeyLabels.uuidBytes(vm), outputByteCount: 32)
    }

    static func checkDEK(_ dek: SecretBytes) throws {
        guard dek.count == 32 else {
            throw VaultError(.invalidArgument, subject: "key protector", reason: "a guest state protection key is 32 bytes, not \(dek.count)")
        }
    }

    // MARK: Unwrapping

    /// Unwraps with a vault; nil if this slot is not a vault slot of that vault.
    /// Throws if it is, but does not open (a corrupt slot).
    func unwrap(vault: KeyVault, vm: UUID) throws -> SecretBytes? {
        guard case .vault(let id, let epoch, let wrapped) = self, id == vault.rootKeyID else { return nil }
        return try unwrapOrCorrupt(wrapped, kek: vault.kek(vm: vm, epoch: epoch))
    }

    /// Unwraps with a recipient private key; nil if the slot is for another recipient.
    func unwrap(recipientKey: X25519.PrivateKey, vm: UUID) throws -> SecretBytes? {
        guard case .recipient(let recipient, let ephemeral, let wrapped) = self,
              recipient == recipientKey.publicKey.rawRepresentation else { return nil }
        let shared: SecretBytes
        do {
            shared = try recipientKey.sharedSecret(with: X25519.PublicKey(rawRepresentation: ephemeral))
        } catch {
            throw VaultError(.corruptSlot, subject: "recipient slot", reason: "the ephemeral public key is invalid", underlying: error)
        }
        return try unwrapOrCorrupt(wrapped, kek: Self.recipientKEK(shared: shared, ephemeral: ephemeral, recipient: recipient, vm: vm))
    }

    /// Unwraps with a passphrase; nil if this is not a passphrase slot or the passphrase
    /// does not open it (a wrong passphrase and a corrupt slot look the same).
    func unwrap(passphrase: SecretBytes) throws -> SecretBytes? {
        guard case .passphrase(let log2N, let r, let p, let salt, let wrapped) = self else { return nil }
        let kek = try PasswordKDF.scrypt(passphrase: passphrase, salt: salt,
                                         parameters: .init(n: 1 << UInt64(log2N), r: UInt32(r), p: UInt32(p)), outputByteCount: 32)
        return try? AESKeyWrap.unwrapWithPadding(wrapped, kek: kek)
    }

    private func unwrapOrCorrupt(_ wrapped: [UInt8], kek: SecretBytes) throws -> SecretBytes {
        do {
            return try AESKeyWrap.unwrapWithPadding(wrapped, kek: kek)
        } catch {
            throw VaultError(.corruptSlot, subject: "\(kind) slot", reason: "the wrapped key does not verify: the slot was changed, or it was made for another VM",
                             underlying: error)
        }
    }
}
