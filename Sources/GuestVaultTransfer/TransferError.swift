/// The one error type of transfers: what went wrong, at which frame, and whether a
/// retry can resume.
public struct TransferError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// Not a GuestVault transfer (bad magic) or an unsupported version.
        public static let protocolMismatch = Code("protocolMismatch")
        /// A frame does not authenticate: changed bytes, a foreign frame, or a wrong key.
        public static let authenticationFailed = Code("authenticationFailed")
        /// A frame's sequence number is not the next one: replayed, reordered or dropped.
        public static let sequence = Code("sequence")
        /// The stream ended before the final frame.
        public static let truncated = Code("truncated")
        /// A frame of a type not allowed at this point, or malformed contents.
        public static let unexpectedFrame = Code("unexpectedFrame")
        /// A length over the limits.
        public static let tooLarge = Code("tooLarge")
        /// The final frame's transcript or file digest does not match.
        public static let integrity = Code("integrity")
        /// The peer reported an error.
        public static let peer = Code("peer")
        /// The destination exists, or a file operation failed.
        public static let io = Code("io")
        /// The peer's identity or the keys do not fit (no recipient key, wrong PSK).
        public static let keys = Code("keys")
    }

    public let code: Code
    public let reason: String

    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { reason }
}

/// A byte stream: a socket, a pipe, or a test double.
public protocol ByteChannel: AnyObject {
    func send(_ bytes: [UInt8]) throws
    /// Up to `maximum` bytes; empty at the end of the stream.
    func receive(maximum: Int) throws -> [UInt8]
}
