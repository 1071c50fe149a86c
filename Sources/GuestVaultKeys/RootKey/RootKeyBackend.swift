public import GuestVaultCrypto

/// Where a vault's root key lives and how it is used. The root key never leaves its
/// backend: every key the vault hands out is one SP 800-108 block derived from it.
///
/// `deriveBlock(label:context:)` returns
/// `HMAC-SHA256(root, [1]_32 || label || 0x00 || context || [256]_32)`, which is the
/// SP 800-108r1 counter-mode KDF with HMAC-SHA256 for a 32-byte output
/// (`[x]_32` is a 32-bit big-endian integer). The file backend computes it with
/// OpenSSL's KBKDF; the PKCS#11 backend computes the single HMAC inside the token
/// (CKM_SHA256_HMAC), so both give the same bytes for the same root key.
public protocol RootKeyBackend: Sendable {
    /// "file" or "pkcs11".
    var kind: String { get }
    /// Where the root key is, for messages: a file path or "token LABEL (module PATH)".
    var location: String { get }
    /// One 32-byte SP 800-108 block for `label` and `context` (both may be empty).
    func deriveBlock(label: [UInt8], context: [UInt8]) throws -> SecretBytes
}

public extension RootKeyBackend {
    /// A public identifier of the root key: the first 16 bytes of the block for label
    /// "GuestVault v1 root key id" and an empty context. Lets a container say which
    /// vault its vault slot belongs to without revealing anything about the key.
    func rootKeyID() throws -> [UInt8] {
        Array(try deriveBlock(label: KeyLabels.rootKeyID, context: []).unsafeCopyOfBytes().prefix(16))
    }
}

/// The fixed input of one SP 800-108 counter-mode block with HMAC-SHA256 and a 32-byte
/// output: `[1]_32 || label || 0x00 || context || [256]_32`.
public func sp800108SingleBlockInput(label: [UInt8], context: [UInt8]) -> [UInt8] {
    [0, 0, 0, 1] + label + [0] + context + [0, 0, 1, 0]
}
