public import FoundationEssentials
import GuestVaultCore
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
                    corrupt = VaultError(.corruptSlot, subject: "slot \(index) (\(slot.kind))", reason: error.reason, underlying: error.underlying)
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
        var writer = ByteWriter()
        writer.u8(UInt8(slots.count))
        for slot in slots {
            var body = ByteWriter()
            switch slot {
            case .vault(let id, let epoch, let wrapped):
                body.raw(id)
                body.u32(epoch)
                body.raw(wrapped)
            case .recipient(let r, let e, let wrapped):
                body.raw(r)
                body.raw(e)
                body.raw(wrapped)
            case .passphrase(let log2N, let r, let p, let salt, let wrapped):
                body.raw([log2N, r, p, 0])
                body.raw(salt)
                body.raw(wrapped)
            }
            writer.u8(slot.kind.rawValue)
            writer.u8(0)
            writer.prefixed(body.bytes, UInt16.self)
        }
        return writer.bytes
    }

    /// Parses ``encoded()`` bytes, treating them as hostile: every length checked,
    /// unknown kinds and trailing bytes refused, with the offset named.
    public static func parse(_ bytes: [UInt8]) throws -> KeyProtectorSet {
        func fail(_ offset: Int, _ reason: String, _ cause: ByteCodecError? = nil) -> VaultError {
            VaultError(.corruptSlot, subject: "key protectors at byte \(offset)", reason: reason, underlying: cause)
        }
        var reader = ByteReader(bytes, subject: "key protectors")
        guard let count = try? reader.u8("slot count") else { throw fail(0, "empty") }
        guard (1...maximumCount).contains(Int(count)) else { throw fail(0, "slot count \(count) is outside 1...\(maximumCount)") }
        var slots: [KeyProtector] = []
        for index in 0..<Int(count) {
            let headerOffset = reader.offset
            let kindByte: UInt8, flags: UInt8, length: UInt16
            do {
                kindByte = try reader.u8("slot \(index) kind")
                flags = try reader.u8("slot \(index) flags")
                length = try reader.u16("slot \(index) body length")
            } catch {
                throw fail(headerOffset, "slot \(index) header is truncated", error)
            }
            guard let kind = KeyProtector.Kind(rawValue: kindByte) else { throw fail(headerOffset, "slot \(index) has unknown kind \(kindByte)") }
            guard flags == 0 else { throw fail(headerOffset + 1, "slot \(index) has unknown flags \(flags)") }
            let offset = reader.offset
            var body: ByteReader
            do {
                body = ByteReader(bytes, from: offset, to: offset + Int(length), subject: "slot \(index)")
                try reader.skip(Int(length), "slot \(index) body")
            } catch {
                throw fail(offset, "slot \(index) body of \(length) bytes is truncated", error)
            }
            let wrappedCount = KeyProtector.wrappedDEKCount
            // Each body's length is checked against its kind first: the reads cannot fail.
            switch kind {
            case .vault:
                guard Int(length) == 16 + 4 + wrappedCount else { throw fail(offset, "vault slot body is \(length) bytes, expected \(20 + wrappedCount)") }
                slots.append(.vault(rootKeyID: try body.array(16, "root key id"), epoch: try body.u32("epoch"),
                                    wrappedKey: try body.array(wrappedCount, "wrapped key")))
            case .recipient:
                guard Int(length) == 64 + wrappedCount else { throw fail(offset, "recipient slot body is \(length) bytes, expected \(64 + wrappedCount)") }
                slots.append(.recipient(recipient: try body.array(32, "recipient"), ephemeral: try body.array(32, "ephemeral"),
                                        wrappedKey: try body.array(wrappedCount, "wrapped key")))
            case .passphrase:
                guard Int(length) == 36 + wrappedCount else { throw fail(offset, "passphrase slot body is \(length) bytes, expected \(36 + wrappedCount)") }
                let log2N = try body.u8("log2 N"), r = try body.u8("r"), p = try body.u8("p"), reserved = try body.u8("reserved")
                let parameters = PasswordKDF.ScryptParameters(n: 1 << UInt64(min(log2N, 63)), r: UInt32(r), p: UInt32(p))
                guard log2N >= 1, reserved == 0, parameters.problem == nil else {
                    throw fail(offset, "passphrase slot scrypt parameters out of range (log2 N \(log2N), r \(r), p \(p))\(parameters.problem.map { ": " + $0 } ?? "")")
                }
                slots.append(.passphrase(log2N: log2N, r: r, p: p, salt: try body.array(32, "salt"),
                                         wrappedKey: try body.array(wrappedCount, "wrapped key")))
            }
        }
        guard reader.isAtEnd else { throw fail(reader.offset, "\(reader.remaining) trailing bytes after the last slot") }
        return try KeyProtectorSet(slots)
    }
}
