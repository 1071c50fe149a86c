extension ErrorCode {
    /// The input ends inside a structure that must be complete.
    public static let truncated = ErrorCode("truncated", .integrity)
    /// A length, count or field is out of range or inconsistent.
    public static let malformed = ErrorCode("malformed", .integrity)
    /// A declared length is over a cap.
    public static let tooLarge = ErrorCode("tooLarge", .limit)
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
