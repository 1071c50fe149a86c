import GuestVaultCore

extension SwtpmStateFile {
    // MARK: Writing

    /// A state file as swtpm 0.7 writes it: plain (one data record), or encrypted with
    /// `key` (encrypted data, HMAC and a fresh random IV).
    public static func encode(_ payload: [UInt8], key: SwtpmKey?) throws -> [UInt8] {
        var flags: Flags = []
        var body: [UInt8] = []
        if let key {
            flags.insert(.encrypted)
            if key.mode == .aes256CBC { flags.insert(.stateKey256) }
            body = try seal(payload, key: key, dataTag: .encryptedData, ivTag: .ivForEncryptedData)
        } else {
            body = record(.data, payload[...])
        }
        return try withHeader(body, flags: flags)
    }

    /// A control-channel state blob as swtpm 0.7's GET_STATEBLOB returns it: the data
    /// records (plain, or encrypted with `key`) inside a migration record, or encrypted
    /// again with `migrationKey`.
    public static func encodeBlob(_ payload: [UInt8], key: SwtpmKey?, migrationKey: SwtpmKey? = nil) throws -> [UInt8] {
        var flags: Flags = [.migrationData]
        var inner: [UInt8] = []
        if let key {
            flags.insert(.encrypted)
            if key.mode == .aes256CBC { flags.insert(.stateKey256) }
            inner = try seal(payload, key: key, dataTag: .encryptedData, ivTag: .ivForEncryptedData)
        } else {
            inner = record(.data, payload[...])
        }
        var body: [UInt8] = []
        if let migrationKey {
            flags.insert(.migrationEncrypted)
            if migrationKey.mode == .aes256CBC { flags.insert(.migrationKey256) }
            body = try seal(inner, key: migrationKey, dataTag: .encryptedMigrationData, ivTag: .ivForEncryptedMigrationData)
        } else {
            body = record(.migrationData, inner[...])
        }
        return try withHeader(body, flags: flags)
    }
}
