public import GuestVaultCore

extension ErrorCode {
    /// A backup's copy does not match its manifest (damaged or replaced).
    public static let backupMismatch = ErrorCode("backupMismatch", .integrity)
    /// No backup (or no target directory) where one was named.
    public static let backupNotFound = ErrorCode("backupNotFound", .notFound)
    /// A backup directory another user could change.
    public static let backupInsecure = ErrorCode("backupInsecure", .permission)
    /// A restore failed for a reason the error underneath gives.
    public static let backupFailed = ErrorCode("backupFailed", .failure)
}

/// The error of backups and restores: what failed, on which backup, container or file,
/// and what to do; the container's or vault's error stays underneath (so a rollback
/// stays a rollback).
public struct BackupError: GuestVaultError {
    public let code: ErrorCode
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

    public var message: String { "\(subject): \(reason)" }
    public var description: String { ErrorChain.message(of: self) }
}
