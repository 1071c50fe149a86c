public import GuestVaultCore

/// Errors of the TPM engine and the server.
public struct TPMEngineError: GuestVaultError {
    /// The codes are ``ErrorCode`` statics (`.alreadyRunning`, `.notRunning`, `.libtpms`,
    /// `.malformed`, `.tpmError`, `.storage`).
    public typealias Code = ErrorCode

    public let code: ErrorCode
    public let reason: String
    /// The TPM response code, for `.tpmError` and `.libtpms`.
    public let responseCode: UInt32?
    /// What caused it (a storage failure inside libtpms' NV callback, for example).
    public let underlying: (any Error & Sendable)?
    public let location: SourceLocation

    public init(_ code: ErrorCode, _ reason: String, responseCode: UInt32? = nil,
                underlying: (any Error & Sendable)? = nil, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.reason = reason
        self.responseCode = responseCode
        self.underlying = underlying
        self.location = SourceLocation(file: file, line: line)
    }

    public var message: String { reason }
}
