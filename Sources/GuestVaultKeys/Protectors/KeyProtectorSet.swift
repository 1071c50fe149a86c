public import Foundation
public import GuestVaultCrypto

/// What a caller offers to open a container's key: any of a vault, recipient private
/// keys, a passphrase.
public struct UnlockCredentials: Sendable {
    public var vault: KeyVault?
    public var recipientKeys: [X25519.PrivateKey]
    public var passphrase: SecretBytes?

    public init(vault: KeyVault? = nil, recipientKeys: [X25519.PrivateKey] = [], passphrase: SecretBytes? = nil) {
        self.vault = vault
        self.recipientKeys = recipientKeys
        self.passphrase = passphrase
    }
}

/// The key protector slots of one container: at most ``maximumCount``, at least one.
public struct KeyProtectorSet: Sendable, Hashable {
    public static let maximumCount = 8

    public private(set) var slots: [KeyProtector]

    public init(_ slots: [KeyProtector]) throws {
        guard (1...Self.maximumCount).contains(slots.count) else {
            throw VaultError(.slotLimit, subject: "key protectors", reason: "a container has 1 to \(Self.maximumCount) slots, not \(slots.count)")
        }
        self.slots = slots
    }

    /// Adds a slot; refuses a ninth.
    public mutating func add(_ slot: KeyProtector) throws {
        guard slots.count < Self.maximumCount else {
            throw VaultError(.slotLimit, subject: "key protectors", reason: "all \(Self.maximumCount) slots are in use; remove one first")
        }
        slots.append(slot)
    }

    /// Removes slot `index`; refuses to remove the last one (the key would be lost).
    public mutating func remove(at index: Int) throws {
        guard slots.indices.contains(index) else {
            throw VaultError(.invalidArgument, subject: "key protectors", reason: "there is no slot \(index) (slots 0...\(slots.count - 1))")
        }
        guard slots.count > 1 else {
            throw VaultError(.slotLimit, subject: "key protectors", reason: "slot \(index) is the only slot; removing it would lose the key")
        }
        slots.remove(at: index)
    }

    /// Opens the key with the first slot the credentials can open, and says which.
    /// Tries vault slots, then recipient slots, then passphrase slots (scrypt is slow).
    public func unwrap(vm: UUID, with credentials: UnlockCredentials) throws -> (key: SecretBytes, slot: Int) {
        var corrupt: VaultError?
        for kind in [KeyProtector.Kind.vault, .recipient, .passphrase] {
            for (index, slot) in slots.enumerated() where slot.kind == kind {
                do {
                    switch slot {
                    case .vault:
                        if let vault = credentials.vault, let key = try slot.unwrap(vault: vault, vm: vm) { return (key, index) }
                    case .recipient:
                        for recipient in credentials.recipientKeys {
                            if let key = try slot.unwrap(recipientKey: recipient, vm: vm) { return (key, index) }
                        }
                    case .passphrase:
                        if let passphrase = credentials.passphrase, let key = try slot.unwrap(passphrase: passphrase) { return (key, index) }
                    }
                } catch let error as VaultError where error.code == .corruptSlot {
                    corrupt = VaultError(.corruptSlot, subject: "slot \(index) (\(slot.kind))", reason: error.reason)
                }
            }
        }
        if let corrupt { throw corrupt }
        let offered = [credentials.vault.map { "vault \(hexString($0.rootKeyID))" },
                       credentials.recipientKeys.isEmpty ? nil : "\(credentials.recipientKeys.count) recipient key(s)",
                       credentials.passphrase == nil ? nil : "a passphrase"].compactMap { $0 }
        throw VaultError(.noUsableSlot, subject: "key protectors",
                         reason: "none of the \(slots.count) slots (\(slots.map(\.summary).joined(separator: "; "))) opens with \(offered.isEmpty ? "no credentials" : offered.joined(separator: ", "))")
    }

    /// Re-wraps every slot of `vault` to `newEpoch` (KEK rotation). The key and the
    /// sealed data do not change. Returns how many slots were re-wrapped.
    @discardableResult
    public mutating func rewrapVaultSlots(key: SecretBytes, vault: KeyVault, vm: UUID, newEpoch: UInt32) throws -> Int {
        var count = 0
        for index in slots.indices {
            if case .vault(let id, _, _) = slots[index], id == vault.rootKeyID {
                slots[index] = try .wrapForVault(key, vault: vault, vm: vm, epoch: newEpoch)
                count += 1
            }
        }
        return count
    }

    // MARK: Encoding

    /// The slots' bytes: `count (u8)` then each slot as `kind (u8) | flags (u8, 0) |
    /// body length (u16 BE) | body`. docs/KEYS.md has each body.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = [UInt8(slots.count)]
        for slot in slots {
            let body: [UInt8]
            switch slot {
            case .vault(let id, let epoch, let wrapped): body = id + bigEndian(epoch) + wrapped
            case .recipient(let r, let e, let wrapped): body = r + e + wrapped
            case .passphrase(let log2N, let r, let p, let salt, let wrapped): body = [log2N, r, p, 0] + salt + wrapped
            }
            out += [slot.kind.rawValue, 0, UInt8(body.count >> 8), UInt8(body.count & 0xff)] + body
        }
        return out
    }

    /// Parses ``encoded()`` bytes, treating them as hostile: every length checked,
    /// unknown kinds and trailing bytes refused, with the offset named.
    public static func parse(_ bytes: [UInt8]) throws -> KeyProtectorSet {
        func fail(_ offset: Int, _ reason: String) -> VaultError {
            VaultError(.corruptSlot, subject: "key protectors at byte \(offset)", reason: reason)
        }
        guard let count = bytes.first else { throw fail(0, "empty") }
        guard (1...maximumCount).contains(Int(count)) else { throw fail(0, "slot count \(count) is outside 1...\(maximumCount)") }
        var offset = 1
        var slots: [KeyProtector] = []
        for index in 0..<Int(count) {
            guard bytes.count - offset >= 4 else { throw fail(offset, "slot \(index) header is truncated") }
            let kindByte = bytes[offset], flags = bytes[offset + 1]
            let length = Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            guard let kind = KeyProtector.Kind(rawValue: kindByte) else { throw fail(offset, "slot \(index) has unknown kind \(kindByte)") }
            guard flags == 0 else { throw fail(offset + 1, "slot \(index) has unknown flags \(flags)") }
            offset += 4
            guard bytes.count - offset >= length else { throw fail(offset, "slot \(index) body of \(length) bytes is truncated") }
            let body = Array(bytes[offset..<(offset + length)])
            let wrappedCount = KeyProtector.wrappedDEKCount
            switch kind {
            case .vault:
                guard length == 16 + 4 + wrappedCount else { throw fail(offset, "vault slot body is \(length) bytes, expected \(20 + wrappedCount)") }
                slots.append(.vault(rootKeyID: Array(body[0..<16]), epoch: readBigEndian32(body, at: 16), wrappedKey: Array(body[20...])))
            case .recipient:
                guard length == 64 + wrappedCount else { throw fail(offset, "recipient slot body is \(length) bytes, expected \(64 + wrappedCount)") }
                slots.append(.recipient(recipient: Array(body[0..<32]), ephemeral: Array(body[32..<64]), wrappedKey: Array(body[64...])))
            case .passphrase:
                guard length == 36 + wrappedCount else { throw fail(offset, "passphrase slot body is \(length) bytes, expected \(36 + wrappedCount)") }
                let parameters = PasswordKDF.ScryptParameters(n: 1 << UInt64(min(body[0], 63)), r: UInt32(body[1]), p: UInt32(body[2]))
                guard body[0] >= 1, body[3] == 0, parameters.problem == nil else {
                    throw fail(offset, "passphrase slot scrypt parameters out of range (log2 N \(body[0]), r \(body[1]), p \(body[2]))\(parameters.problem.map { ": " + $0 } ?? "")")
                }
                slots.append(.passphrase(log2N: body[0], r: body[1], p: body[2], salt: Array(body[4..<36]), wrappedKey: Array(body[36...])))
            }
            offset += length
        }
        guard offset == bytes.count else { throw fail(offset, "\(bytes.count - offset) trailing bytes after the last slot") }
        return try KeyProtectorSet(slots)
    }
}
