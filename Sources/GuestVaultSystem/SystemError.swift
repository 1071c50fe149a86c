#if canImport(Glibc)
import Glibc
#endif
public import GuestVaultCore

/// A failed system call: which operation, on which path, and errno in words.
public struct SystemError: GuestVaultError {
    public let operation: String
    public let path: String
    public let errno: Int32
    public let location: SourceLocation

    public init(_ operation: String, path: String, errno: Int32, file: String = #fileID, line: Int = #line) {
        self.operation = operation
        self.path = path
        self.errno = errno
        self.location = SourceLocation(file: file, line: line)
    }

    public var message: String {
        "\(operation) \(path): \(String(cString: strerror(errno)))"
    }

    public var underlying: (any Error & Sendable)? { nil }

    /// The category errno falls in.
    public var code: ErrorCode {
        switch errno {
        case ENOENT, ENOTDIR: .fileNotFound
        case EEXIST: .fileExists
        case EACCES, EPERM, ELOOP, EROFS: .filePermission
        case ENOSPC, EDQUOT: .diskFull
        case EAGAIN, ETIMEDOUT: .timedOut
        case EMFILE, ENFILE, EFBIG: .resourceLimit
        default: .ioFailure
        }
    }

    /// Whether the failure was "no such file or directory".
    public var isNotFound: Bool { errno == ENOENT }

    /// Whether a socket's send or receive timeout ran out (``StreamSocket/setTimeout(seconds:)``).
    public var isTimeout: Bool { errno == EAGAIN || errno == EWOULDBLOCK }
}

extension ErrorCode {
    public static let fileNotFound = ErrorCode("fileNotFound", .notFound)
    public static let fileExists = ErrorCode("fileExists", .alreadyExists)
    public static let filePermission = ErrorCode("filePermission", .permission)
    public static let diskFull = ErrorCode("diskFull", .io)
    public static let timedOut = ErrorCode("timedOut", .timeout)
    public static let resourceLimit = ErrorCode("resourceLimit", .limit)
    public static let ioFailure = ErrorCode("ioFailure", .io)
}
