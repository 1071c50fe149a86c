#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: which operation, on which path, and errno in words.
public struct SystemError: Error, Sendable, CustomStringConvertible {
    public let operation: String
    public let path: String
    public let errno: Int32

    public init(_ operation: String, path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    public var description: String {
        "\(operation) \(path): \(String(cString: strerror(errno)))"
    }

    /// Whether the failure was "no such file or directory".
    public var isNotFound: Bool { errno == ENOENT }

    /// Whether a socket's send or receive timeout ran out (``StreamSocket/setTimeout(seconds:)``).
    public var isTimeout: Bool { errno == EAGAIN || errno == EWOULDBLOCK }
}
