public import GuestVaultCore

extension ErrorCode {
    /// Not a GuestVault transfer (bad magic) or an unsupported version.
    public static let protocolMismatch = ErrorCode("protocolMismatch", .peer)
    /// A frame's sequence number is not the next one: replayed, reordered or dropped.
    public static let sequence = ErrorCode("sequence", .peer)
    /// A frame of a type not allowed at this point, or malformed contents.
    public static let unexpectedFrame = ErrorCode("unexpectedFrame", .peer)
    /// The final frame's transcript or file digest does not match, or the received
    /// container is not what the manifest said.
    public static let integrity = ErrorCode("integrity", .integrity)
    /// The peer reported an error (its words are in the message, marked and filtered).
    public static let peer = ErrorCode("peer", .peer)
    /// The peer's identity or the keys do not fit (no recipient key, wrong PSK, a
    /// sender or VM this receiver does not accept, a small-order key).
    public static let keys = ErrorCode("keys", .keys)
    /// The peer sent nothing (or took nothing) for longer than the channel's timeout, or
    /// the handshake did not finish within its deadline.
    public static let timeout = ErrorCode("timeout", .timeout)
    // `.truncated` (the stream ended before the final frame) and `.tooLarge` (a length
    // over the limits) are GuestVaultCore's codes of the same names and categories.
}

/// The one error type of transfers: what went wrong, at which frame, and the error
/// that caused it (a container's rollback stays `.rollback` for
/// `ErrorChain.category(of:)`).
public struct TransferError: GuestVaultError {
    /// The codes are `ErrorCode` statics: `.protocolMismatch`, `.authenticationFailed`,
    /// `.sequence`, `.truncated`, `.unexpectedFrame`, `.tooLarge`, `.integrity`, `.peer`,
    /// `.io`, `.keys`, `.timeout`.
    public typealias Code = ErrorCode

    public let code: ErrorCode
    /// What failed, in one line, without the cause's text (that is `underlying`).
    public let reason: String
    public let underlying: (any Error & Sendable)?
    public let location: SourceLocation

    public init(_ code: ErrorCode, _ reason: String, underlying: (any Error & Sendable)? = nil,
                file: String = #fileID, line: Int = #line) {
        self.code = code
        self.reason = reason
        self.underlying = underlying
        self.location = SourceLocation(file: file, line: line)
    }

    public var message: String { reason }

    /// The message followed by its causes, on one line.
    public var description: String { ErrorChain.message(of: self) }
}
