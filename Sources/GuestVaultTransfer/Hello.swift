import GuestVaultCore
import GuestVaultCrypto

/// The cleartext hello each side sends first (140 bytes, docs/TRANSFER.md §2.1).
///
/// ```
/// 0    4  "GVTX"
/// 4    2  version (1)
/// 6    1  role (1 sender, 2 receiver)
/// 7    1  mode (1 recipient key, 2 migration key)
/// 8   32  ephemeral X25519 public key
/// 40  32  random
/// 72  32  key id
/// 104 32  sender's static key (recipient mode, sender's hello) or zeros
/// 136  4  capabilities (zero)
/// ```
package struct Hello: Equatable, Sendable {
    static let magic = Array("GVTX".utf8)
    static let version: UInt16 = 1
    package static let count = 140

    package enum Role: UInt8, Sendable { case sender = 1, receiver = 2 }
    package enum Mode: UInt8, Sendable { case recipient = 1, presharedKey = 2 }

    var role: Role
    var mode: Mode
    var ephemeral: [UInt8]
    var random: [UInt8]
    var keyID: [UInt8]
    /// The sender's static (vault recipient) public key in recipient mode; zeros in the
    /// receiver's hello and in PSK mode.
    var senderKey: [UInt8]

    package var bytes: [UInt8] {
        var out = ByteWriter(capacity: Self.count)
        out.raw(Self.magic)
        out.u16(Self.version)
        out.u8(role.rawValue)
        out.u8(mode.rawValue)
        out.raw(ephemeral)
        out.raw(random)
        out.raw(keyID)
        out.raw(senderKey)
        out.u32(0)
        return out.bytes
    }

    package static func parse(_ b: [UInt8]) throws -> Hello {
        guard b.count == count, Array(b[0..<4]) == magic else {
            throw TransferError(.protocolMismatch, "the peer is not a GuestVault transfer endpoint (bad hello)")
        }
        var reader = ByteReader(b, subject: "the peer's hello")
        do {
            _ = try reader.take(4, "magic")
            let version = try reader.u16("version")
            guard version == Self.version else {
                throw TransferError(.protocolMismatch, "the peer speaks transfer version \(version); this build speaks \(Self.version)")
            }
            let roleByte = try reader.u8("role"), modeByte = try reader.u8("mode")
            guard let role = Role(rawValue: roleByte), let mode = Mode(rawValue: modeByte) else {
                throw TransferError(.protocolMismatch, "the hello has an unknown role (\(roleByte)) or mode (\(modeByte))")
            }
            let ephemeral = try reader.array(32, "ephemeral key")
            let random = try reader.array(32, "random")
            let keyID = try reader.array(32, "key id")
            let senderKey = try reader.array(32, "sender key")
            guard try reader.u32("capabilities") == 0 else {
                throw TransferError(.protocolMismatch, "the peer asks for capabilities this build does not have")
            }
            try reader.expectEnd("hello")
            let carriesSenderKey = role == .sender && mode == .recipient
            guard carriesSenderKey != senderKey.allSatisfy({ $0 == 0 }) else {
                throw TransferError(.protocolMismatch, carriesSenderKey
                    ? "the sender's hello names no sender key" : "the hello has a sender key where it must be zero")
            }
            return Hello(role: role, mode: mode, ephemeral: ephemeral, random: random, keyID: keyID, senderKey: senderKey)
        } catch let error as ByteCodecError {
            throw TransferError(.protocolMismatch, "the peer's hello is malformed", underlying: error)
        }
    }

    static let pskLabel = Array("GuestVault v1 psk id".utf8)

    /// The key id for `authentication` (docs/TRANSFER.md §2.1).
    package static func keyID(for authentication: TransferAuthentication) throws -> [UInt8] {
        switch authentication {
        case .toRecipient(let key, _): try SHA256.hash(key.rawRepresentation)
        case .asRecipient(let key, _): try SHA256.hash(key.publicKey.rawRepresentation)
        case .presharedKey(let psk):
            try {
                var hash = try SHA256()
                try hash.update(pskLabel)
                try hash.update(psk)
                return try hash.finalize()
            }()
        }
    }
}
