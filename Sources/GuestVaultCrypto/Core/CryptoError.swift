public import GuestVaultCore

extension ErrorCode {
    /// A key has the wrong number of bytes for the algorithm.
    public static let invalidKeySize = ErrorCode("invalidKeySize", .usage)
    /// A nonce or IV has the wrong number of bytes.
    public static let invalidNonceSize = ErrorCode("invalidNonceSize", .usage)
    /// An authentication tag has a size the operation does not accept.
    public static let invalidTagSize = ErrorCode("invalidTagSize", .usage)
    /// The tag did not verify: wrong key, wrong associated data, or changed bytes.
    public static let authenticationFailure = ErrorCode("authenticationFailure", .integrity)
    /// Input is shorter than the format requires (for example, shorter than a tag).
    public static let truncatedInput = ErrorCode("truncatedInput", .integrity)
    /// Input is empty where the operation needs at least one byte.
    public static let emptyInput = ErrorCode("emptyInput", .usage)
    /// Input is longer than the operation allows.
    public static let inputTooLarge = ErrorCode("inputTooLarge", .limit)
    /// A requested output length is out of range for the algorithm.
    public static let invalidOutputLength = ErrorCode("invalidOutputLength", .usage)
    /// An argument is out of the range the operation accepts.
    public static let invalidInput = ErrorCode("invalidInput", .usage)
    /// A public key is malformed or of the wrong size.
    public static let invalidPublicKey = ErrorCode("invalidPublicKey", .integrity)
    /// The operating system's or OpenSSL's random generator failed. Never retried
    /// with a weaker source.
    public static let randomFailure = ErrorCode("randomFailure", .failure)
    /// An object is used in a state that does not allow the call (for example,
    /// `update` after `finalize`).
    public static let invalidState = ErrorCode("invalidState", .failure)
    /// OpenSSL could not provide an algorithm (the provider is missing).
    public static let algorithmUnavailable = ErrorCode("algorithmUnavailable", .unsupported)
    /// OpenSSL reported an internal failure; see ``CryptoError/openSSLErrors``.
    public static let libraryFailure = ErrorCode("libraryFailure", .failure)
}

/// The one error type of the crypto core.
///
/// It names the operation that failed (`"AES-256-GCM open"`), a machine-readable
/// ``Code``, a human reason, and the text of OpenSSL's error queue at the time of
/// failure. It never carries key material: reasons are written by this module and only
/// ever mention sizes and names.
public struct CryptoError: GuestVaultError, Hashable {
    /// The codes are ``ErrorCode`` statics (`.authenticationFailure`, ...), each with
    /// its category.
    public typealias Code = ErrorCode

    public let code: Code
    /// The operation that failed, for example `"AES-256-GCM open"`.
    public let operation: String
    /// What went wrong, in words. Never contains secret bytes.
    public let reason: String
    /// OpenSSL's error queue, drained when this error was made (oldest first).
    public let openSSLErrors: [String]
    public let file: String
    public let line: Int
    public var location: SourceLocation { SourceLocation(file: file, line: line) }
    /// Crypto failures are where a chain ends: OpenSSL's queue is kept as text.
    public var underlying: (any Error & Sendable)? { nil }

    public init(
        _ code: Code, operation: String, reason: String, openSSLErrors: [String] = [],
        file: String = #fileID, line: Int = #line
    ) {
        self.code = code
        self.operation = operation
        self.reason = reason
        self.openSSLErrors = openSSLErrors
        self.file = file
        self.line = line
    }

    public var message: String {
        var text = "\(operation) failed: \(reason)"
        if !openSSLErrors.isEmpty {
            text += " (OpenSSL: " + openSSLErrors.joined(separator: "; ") + ")"
        }
        return text
    }

    /// The one-line message (declared here so callers need not import GuestVaultCore).
    public var description: String { message }

    public static func == (lhs: CryptoError, rhs: CryptoError) -> Bool {
        lhs.code == rhs.code && lhs.operation == rhs.operation && lhs.reason == rhs.reason
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(operation)
        hasher.combine(reason)
    }
}
