/// The one error type of the key vaults: what failed, on which vault file or token,
/// and what to do. Never carries key material.
public struct VaultError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// No vault at the path (or it is not a GuestVault vault).
        public static let notFound = Code("notFound")
        /// `vault init` on a directory that already holds a vault.
        public static let alreadyExists = Code("alreadyExists")
        /// A vault file or directory other users can read or write.
        public static let insecurePermissions = Code("insecurePermissions")
        /// A vault file is truncated, has a bad checksum, or is not in the expected format.
        public static let corrupt = Code("corrupt")
        /// The passphrase does not open the root key.
        public static let wrongPassphrase = Code("wrongPassphrase")
        /// The vault needs a passphrase and none was given.
        public static let passphraseRequired = Code("passphraseRequired")
        /// The PKCS#11 token refused the PIN.
        public static let wrongPIN = Code("wrongPIN")
        /// No token with the configured label is present.
        public static let tokenNotFound = Code("tokenNotFound")
        /// The PKCS#11 module could not be loaded or initialised.
        public static let moduleUnavailable = Code("moduleUnavailable")
        /// A PKCS#11 call failed (the CKR code is in the reason).
        public static let tokenFailure = Code("tokenFailure")
        /// No key protector slot could be opened with what was offered.
        public static let noUsableSlot = Code("noUsableSlot")
        /// A key protector slot is malformed or fails its integrity check.
        public static let corruptSlot = Code("corruptSlot")
        /// All slots are in use, or removing the last one.
        public static let slotLimit = Code("slotLimit")
        /// A generation older than the vault has seen for that VM.
        public static let rollback = Code("rollback")
        /// An argument is out of range.
        public static let invalidArgument = Code("invalidArgument")
        /// A file operation failed (the system error is in the reason).
        public static let io = Code("io")
    }

    public let code: Code
    /// The vault directory, vault file or token the error is about.
    public let subject: String
    public let reason: String

    public init(_ code: Code, subject: String, reason: String) {
        self.code = code
        self.subject = subject
        self.reason = reason
    }

    public var description: String { "\(subject): \(reason)" }
}
