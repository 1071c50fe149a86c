public import GuestVaultCore

/// A refusal to read swtpm data: which file, the byte offset where the problem is (when
/// there is one), and what is wrong, in words. Never carries key bytes.
public struct SwtpmFormatError: GuestVaultError {
    /// The codes are ``ErrorCode`` statics: `.truncated`, `.trailingBytes`,
    /// `.unsupportedVersion`, `.badHeader`, `.badLength`, `.tooLarge`, `.unknownTag`,
    /// `.duplicateRecord`, `.missingRecord`, `.unexpectedRecord`, `.authenticationFailed`,
    /// `.badPadding`, `.keyRequired`, `.wrongKeySize`, `.notEncrypted`, `.badKeyOption`,
    /// `.badKeyFile`, `.io`.
    public typealias Code = ErrorCode

    public let code: ErrorCode
    /// The file (or blob) the problem is in.
    public let file: String
    /// The byte offset of the problem from the start of the file, if it has one.
    public let offset: Int?
    /// What is wrong and, where it helps, what to do.
    public let reason: String
    /// What caused it (a read error, a decryption failure).
    public let underlying: (any Error & Sendable)?
    public let location: SourceLocation

    public init(_ code: ErrorCode, file: String, offset: Int?, _ reason: String,
                underlying: (any Error & Sendable)? = nil, fileID: String = #fileID, line: Int = #line) {
        self.code = code
        self.file = file
        self.offset = offset
        self.reason = reason
        self.underlying = underlying
        self.location = SourceLocation(file: fileID, line: line)
    }

    public var message: String {
        if let offset { return "\(file): at byte \(offset): \(reason)" }
        return "\(file): \(reason)"
    }
}
