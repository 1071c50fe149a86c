public import GuestVaultCore

extension ErrorCode {
    // `truncated`, `malformed`, `authenticationFailed`, `rollback`, `locked`, `limit`,
    // `alreadyExists` and `io` are GuestVaultCore's (shared by every module).
    /// Not a GuestVault container (bad magic, unknown version).
    public static let notAContainer = ErrorCode("notAContainer", .integrity)
    /// No such entry, or no container file at the path.
    public static let noSuchEntry = ErrorCode("noSuchEntry", .notFound)
    /// An entry name (or a VM id) is not allowed (docs/FORMAT.md §3.4).
    public static let invalidName = ErrorCode("invalidName", .usage)
    /// The container must be unlocked (keys) for this.
    public static let notUnlocked = ErrorCode("notUnlocked", .usage)
    /// The container was opened read-only, or has staged changes in the way.
    public static let readOnly = ErrorCode("readOnly", .usage)
}

/// The one error type of the sealed state: what failed, on which container file, entry
/// or byte offset, and what to do; the error that caused it (a byte codec error, a
/// system call, checked arithmetic, a key slot) stays underneath, with its own code.
public struct ContainerError: GuestVaultError {
    /// The codes are ``GuestVaultCore/ErrorCode`` statics (`.rollback`, `.noSuchEntry`, …).
    public typealias Code = ErrorCode

    public let code: ErrorCode
    /// The container file, entry or offset the error is about.
    public let subject: String
    /// What failed, for people; never the underlying error's text.
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

    public var message: String { "\(subject): \(reason)" }

    /// The message and the causes it does not already state, on one line.
    public var description: String { ErrorChain.message(of: self) }
}

extension ContainerError {
    /// A structure of the file could not be parsed: the codec's error (field, offset)
    /// stays underneath; the code follows its kind.
    static func parsing(_ error: ByteCodecError, _ what: String, file: String = #fileID, line: Int = #line) -> ContainerError {
        let code: ErrorCode = switch error.kind {
        case .truncated: .truncated
        case .malformed: .malformed
        case .limit: .limit
        }
        return ContainerError(code, subject: error.subject, reason: "\(what) cannot be read", underlying: error, file: file, line: line)
    }

    /// A number from the file is out of range (checked arithmetic refused it).
    static func outOfRange(_ error: Checked.Overflow, subject: String, file: String = #fileID, line: Int = #line) -> ContainerError {
        ContainerError(.malformed, subject: subject, reason: "a value of the file is out of range", underlying: error, file: file, line: line)
    }

    /// A file operation failed.
    static func io(_ error: any Error, subject: String, _ what: String, file: String = #fileID, line: Int = #line) -> ContainerError {
        if let error = error as? ContainerError { return error }
        return ContainerError(.io, subject: subject, reason: what, underlying: error, file: file, line: line)
    }
}
