public import GuestVaultCore

// `io`, `alreadyExists` and `rollback` are GuestVaultCore's codes, shared by every module.
extension ErrorCode {
    /// No vault at the path (or it is not a GuestVault vault), or no such key.
    public static let vaultNotFound = ErrorCode("notFound", .notFound)
    /// A vault file or directory other users own, can read or can write, or a PKCS#11
    /// module another user could have replaced.
    public static let insecurePermissions = ErrorCode("insecurePermissions", .permission)
    /// A vault file is truncated, has a bad checksum, or is not in the expected format.
    public static let corrupt = ErrorCode("corrupt", .integrity)
    /// The passphrase does not open the root key.
    public static let wrongPassphrase = ErrorCode("wrongPassphrase", .keys)
    /// The vault needs a passphrase and none was given.
    public static let passphraseRequired = ErrorCode("passphraseRequired", .keys)
    /// The PKCS#11 token refused the PIN.
    public static let wrongPIN = ErrorCode("wrongPIN", .keys)
    /// No token with the configured label is present.
    public static let tokenNotFound = ErrorCode("tokenNotFound", .notFound)
    /// The PKCS#11 module could not be loaded or initialised.
    public static let moduleUnavailable = ErrorCode("moduleUnavailable", .unsupported)
    /// A PKCS#11 call failed (the PKCS#11 error, with its CKR code, is underneath).
    public static let tokenFailure = ErrorCode("tokenFailure", .failure)
    /// No key protector slot could be opened with what was offered.
    public static let noUsableSlot = ErrorCode("noUsableSlot", .keys)
    /// A key protector slot is malformed or fails its integrity check.
    public static let corruptSlot = ErrorCode("corruptSlot", .integrity)
    /// All slots are in use, or removing the last one.
    public static let slotLimit = ErrorCode("slotLimit", .limit)
    /// An argument is out of range.
    public static let invalidArgument = ErrorCode("invalidArgument", .usage)
}

/// The one error type of the key vaults: what failed, on which vault file or token,
/// and what to do, with the error that caused it kept underneath (a ``SystemError``, a
/// ``CryptoError``, a PKCS#11 failure). Never carries key material.
public struct VaultError: GuestVaultError {
    public let code: ErrorCode
    /// The vault directory, vault file or token the error is about.
    public let subject: String
    public let reason: String
    public let underlying: (any Error & Sendable)?
    public let location: SourceLocation

    public init(_ code: ErrorCode, subject: String, reason: String, underlying: (any Error & Sendable)? = nil,
                file: String = #fileID, line: Int = #line) {
        self.code = code
        self.subject = subject
        self.reason = reason
        self.underlying = underlying
        self.location = SourceLocation(file: file, line: line)
    }


    /// A failed file operation on `subject`: the code follows the system error underneath
    /// (a missing file stays "not found", a permission problem stays one), `.io` otherwise.
    public static func file(_ subject: String, _ reason: String, _ error: any Error,
                            file: String = #fileID, line: Int = #line) -> VaultError {
        if let error = error as? VaultError { return error }
        let code: ErrorCode
        switch (error as? any GuestVaultError)?.category {
        case .notFound?: code = .vaultNotFound
        case .permission?: code = .insecurePermissions
        case .alreadyExists?: code = .alreadyExists
        default: code = .io
        }
        return VaultError(code, subject: subject, reason: reason, underlying: error, file: file, line: line)
    }

    public var message: String { "\(subject): \(reason)" }

    /// The one-line message (declared here so callers need not import GuestVaultCore).
    public var description: String { message }

}
