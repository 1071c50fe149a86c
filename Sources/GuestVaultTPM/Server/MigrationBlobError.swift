public import GuestVaultCore

extension ErrorCode {
    /// A state blob's set is older than the container: an older blob set replayed.
    public static let migrationBlobStale = ErrorCode("migrationBlobStale", .rollback)
    /// A sealed state blob belongs to another VM, container, blob type or blob set.
    public static let migrationBlobForeign = ErrorCode("migrationBlobForeign", .policyMismatch)
    /// A plaintext state blob without `--allow-plaintext-migration`.
    public static let migrationBlobPlaintext = ErrorCode("migrationBlobPlaintext", .policyMismatch)
    /// No key to seal or open a state blob with.
    public static let migrationBlobNoKey = ErrorCode("migrationBlobNoKey", .keys)
    /// SET_STATEBLOB refused a blob (the cause is underneath).
    public static let migrationBlobRefused = ErrorCode("migrationBlobRefused", .integrity)
}

/// A state blob that the control channel does not hand out or take in: which blob, and
/// why. Never carries key or state bytes.
public struct MigrationBlobError: GuestVaultError {
    public let code: ErrorCode
    public let blob: TPMStateBlob
    public let reason: String
    public let underlying: (any Error & Sendable)?
    public let location: SourceLocation

    public init(_ code: ErrorCode, blob: TPMStateBlob, _ reason: String, underlying: (any Error & Sendable)? = nil,
                fileID: String = #fileID, line: Int = #line) {
        self.code = code
        self.blob = blob
        self.reason = reason
        self.underlying = underlying
        self.location = SourceLocation(file: fileID, line: line)
    }

    public var message: String { "the \(blob) state blob: \(reason)" }
}
