public import GuestVaultCore

extension ErrorCode {
    /// A C caller passed a NULL pointer, a bad length, unknown flags or a dead handle.
    public static let capiUsage = ErrorCode("capi.usage", .usage)
    /// A caller's read or write callback (or file descriptor) failed.
    public static let capiCallback = ErrorCode("capi.callback", .peer)
    /// A sealed blob is not one (magic, version, length) or does not authenticate.
    public static let capiBlobIntegrity = ErrorCode("capi.blobIntegrity", .integrity)
    /// The C library could not allocate a buffer.
    public static let capiAllocation = ErrorCode("capi.allocation", .limit)
    /// A size is over a limit of the C API.
    public static let capiLimit = ErrorCode("capi.limit", .limit)
}

/// The errors the C boundary makes itself (argument checks, callbacks, sealed blobs).
public struct CAPIError: GuestVaultError {
    public let code: ErrorCode
    public let message: String
    public let underlying: (any Error & Sendable)?
    public let location: SourceLocation

    public init(_ code: ErrorCode, _ message: String, underlying: (any Error & Sendable)? = nil,
                file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.underlying = underlying
        self.location = SourceLocation(file: file, line: line)
    }

    static func usage(_ message: String) -> CAPIError { CAPIError(.capiUsage, message) }
}
