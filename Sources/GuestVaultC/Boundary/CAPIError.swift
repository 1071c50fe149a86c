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
public enum CAPIErrorDomain {}
public typealias CAPIError = DomainError<CAPIErrorDomain>

extension DomainError where Domain == CAPIErrorDomain {
    static func usage(_ message: String) -> CAPIError { CAPIError(.capiUsage, message) }
}
