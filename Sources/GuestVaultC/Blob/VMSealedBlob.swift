public import Foundation
import GuestVaultCore
import GuestVaultCrypto
public import GuestVaultKeys

/// A single blob sealed under a VM's key from a vault, with no container around it
/// (`gv_blob_seal` / `gv_blob_open`; docs/C-API.md, "Sealed blob format"):
///
/// ```
/// magic "GVB1" | version u16 = 1 | KEK epoch u32 | VM UUID (16) | salt (16) | ciphertext | tag (16)
/// key   = SP 800-108 counter KDF, HMAC-SHA256 (KEK(vm, epoch), "GuestVault v1 C API blob", salt), 32 bytes
/// nonce = 12 zero bytes (the key is new for every random salt)
/// AAD   = the 42-byte header || context length u8 || context
/// ```
public enum VMSealedBlob {
    static let magic = Array("GVB1".utf8)
    static let version: UInt16 = 1
    static let label = Array("GuestVault v1 C API blob".utf8)
    public static let headerByteCount = 42
    public static let overhead = headerByteCount + AESGCM.tagByteCount
    /// The largest plaintext (as a container blob).
    public static let maximumPlaintext = 64 << 20
    public static let maximumContext = 255
    static let epoch: UInt32 = 1

    public static func seal(_ plaintext: [UInt8], vault: KeyVault, vm: UUID, context: String) throws -> [UInt8] {
        guard plaintext.count <= maximumPlaintext else {
            throw CAPIError(.capiLimit, "a sealed blob holds at most \(maximumPlaintext) bytes, not \(plaintext.count)")
        }
        let contextBytes = try checkedContext(context)
        let salt = try SecureRandom.bytes(count: 16)
        var header = ByteWriter(capacity: headerByteCount)
        header.raw(magic)
        header.u16(version)
        header.u32(epoch)
        header.raw(uuidBytes(vm))
        header.raw(salt)
        let key = try blobKey(vault: vault, vm: vm, epoch: epoch, salt: salt)
        let sealed = try AESGCM.seal(plaintext, key: key, nonce: nonce, authenticating: aad(header.bytes, contextBytes))
        return header.bytes + sealed
    }

    public static func open(_ sealed: [UInt8], vault: KeyVault, vm: UUID, context: String) throws -> [UInt8] {
        let contextBytes = try checkedContext(context)
        var reader = ByteReader(sealed, subject: "sealed blob")
        let headerBytes: [UInt8]
        let epoch: UInt32
        let salt: [UInt8]
        do {
            guard sealed.count >= overhead else {
                throw CAPIError(.capiBlobIntegrity, "the sealed blob is \(sealed.count) bytes, shorter than its \(overhead)-byte header and tag")
            }
            guard sealed.count - overhead <= maximumPlaintext else {
                throw CAPIError(.capiLimit, "the sealed blob is \(sealed.count) bytes; at most \(maximumPlaintext + overhead) are allowed")
            }
            guard try reader.array(4, "magic") == magic else {
                throw CAPIError(.capiBlobIntegrity, "not a GuestVault sealed blob (bad magic)")
            }
            let version = try reader.u16("version")
            guard version == Self.version else {
                throw CAPIError(.capiBlobIntegrity, "sealed blob version \(version) is not supported (this library reads version \(Self.version))")
            }
            epoch = try reader.u32("KEK epoch")
            guard try reader.array(16, "VM UUID") == uuidBytes(vm) else {
                throw CAPIError(.capiBlobIntegrity, "the sealed blob belongs to another VM, not \(vm.uuidString.lowercased())")
            }
            salt = try reader.array(16, "salt")
            headerBytes = Array(sealed[0..<headerByteCount])
        } catch let error as ByteCodecError {
            throw CAPIError(.capiBlobIntegrity, "the sealed blob is malformed", underlying: error)
        }
        let key = try blobKey(vault: vault, vm: vm, epoch: epoch, salt: salt)
        do {
            return try AESGCM.open(Array(sealed[headerByteCount...]), key: key, nonce: nonce,
                                   authenticating: aad(headerBytes, contextBytes))
        } catch {
            throw CAPIError(.capiBlobIntegrity,
                            "the sealed blob does not authenticate: it was changed, or sealed under another vault, VM or context",
                            underlying: error)
        }
    }

    static let nonce = [UInt8](repeating: 0, count: AESGCM.nonceByteCount)

    private static func blobKey(vault: KeyVault, vm: UUID, epoch: UInt32, salt: [UInt8]) throws -> SecretBytes {
        let kek = try vault.kek(vm: vm, epoch: epoch)
        return try KBKDFContext(key: kek).deriveKey(label: label, context: salt, outputByteCount: 32)
    }

    private static func aad(_ header: [UInt8], _ context: [UInt8]) -> [UInt8] {
        header + [UInt8(context.count)] + context
    }

    private static func checkedContext(_ context: String) throws -> [UInt8] {
        let bytes = Array(context.utf8)
        guard bytes.count <= maximumContext else {
            throw CAPIError(.capiLimit, "the context is \(bytes.count) bytes; at most \(maximumContext)")
        }
        return bytes
    }

    static func uuidBytes(_ uuid: UUID) -> [UInt8] {
        withUnsafeBytes(of: uuid.uuid) { Array($0) }
    }
}
