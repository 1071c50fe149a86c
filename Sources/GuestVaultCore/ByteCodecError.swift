extension ErrorCode {
    /// The input ends inside a structure that must be complete.
    public static let truncated = ErrorCode("truncated", .integrity)
    /// A length, count or field is out of range or inconsistent.
    public static let malformed = ErrorCode("malformed", .integrity)
    /// A declared length is over a cap.
    public static let tooLarge = ErrorCode("tooLarge", .limit)

    // The codes every module shares, declared once so that they mean the same thing
    // (and compile unambiguously) wherever two modules are imported together.
    /// Authentication failed: bytes were changed, belong elsewhere, or the key is wrong.
    public static let authenticationFailed = ErrorCode("authenticationFailed", .integrity)
    /// The generation is older than what the vault has seen.
    public static let rollback = ErrorCode("rollback", .rollback)
    /// Another process holds it for writing.
    public static let locked = ErrorCode("locked", .locked)
    /// A limit was reached (count, size, the last generation).
    public static let limit = ErrorCode("limit", .limit)
    /// What was to be created exists already.
    public static let alreadyExists = ErrorCode("alreadyExists", .alreadyExists)
    /// A file or device operation failed (the SystemError is underneath).
    public static let io = ErrorCode("io", .io)
}

/// A failure of ``ByteReader``: what was read, which field, at which absolute offset.
public struct ByteCodecError: GuestVaultError {
    public enum Kind: Sendable, Hashable { case truncated, malformed, limit }

    public let kind: Kind
    public let subject: String
    public let field: String
    public let position: Int64
    public let reason: String
    public let location: SourceLocation

    public init(_ kind: Kind, subject: String, field: String, position: Int64, reason: String,
                file: String = #fileID, line: Int = #line) {
        self.kind = kind
        self.subject = subject
        self.field = field
        self.position = position
        self.reason = reason
        self.location = SourceLocation(file: file, line: line)
    }

    public var code: ErrorCode {
        switch kind {
        case .truncated: .truncated
        case .malformed: .malformed
        case .limit: .tooLarge
        }
    }

    public var message: String { "\(subject) at byte \(position): \(field): \(reason)" }
    public var underlying: (any Error & Sendable)? { nil }
}
