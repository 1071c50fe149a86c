public import FoundationEssentials
import GuestVaultCore

/// The labels and contexts of every key the hierarchy derives. Changing one changes
/// every key derived with it: these are part of the on-disk format (docs/KEYS.md).
public enum KeyLabels {
    /// Per-VM key-encryption key. Context: ``kekContext(vm:epoch:)``.
    public static let kek = Array("GuestVault v1 KEK".utf8)
    /// The vault's public root key identifier. Context: empty.
    public static let rootKeyID = Array("GuestVault v1 root key id".utf8)
    /// Seals the vault's X25519 recipient private key at rest. Context: empty.
    public static let recipientSeal = Array("GuestVault v1 recipient key seal".utf8)
    /// Authenticates the rollback counter files. Context: empty.
    public static let rollbackCounters = Array("GuestVault v1 rollback counters".utf8)

    /// The KEK context: the VM UUID's 16 bytes (RFC 4122 order) then the key epoch as a
    /// 32-bit big-endian integer.
    public static func kekContext(vm: UUID, epoch: UInt32) -> [UInt8] {
        uuidBytes(vm) + epoch.bigEndianBytes
    }

    /// A UUID's 16 bytes in RFC 4122 (network) order.
    public static func uuidBytes(_ id: UUID) -> [UInt8] {
        withUnsafeBytes(of: id.uuid) { Array($0) }
    }
}
