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
        /// The peer's identity or the keys do not fit (no recipient key, wrong PSK, a
        /// sender this receiver does not accept, a small-order key).
        public static let keys = Code("keys")
        /// The peer sent nothing (or took nothing) for longer than the channel's timeout.
        public static let timeout = Code("timeout")
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
    /// Up to `maximum` bytes into `buffer` from `offset`; returns the count, 0 at the end
    /// of the stream. The default goes through ``receive(maximum:)``.
    func receive(into buffer: inout [UInt8], at offset: Int, maximum: Int) throws -> Int
    /// What has arrived, without waiting: nil if nothing has (or the channel cannot
    /// tell), empty at the end of the stream. The default is nil.
    func receiveIfReady(maximum: Int) throws -> [UInt8]?
}

extension ByteChannel {
    public func receive(into buffer: inout [UInt8], at offset: Int, maximum: Int) throws -> Int {
        let bytes = try receive(maximum: maximum)
        buffer.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
        return bytes.count
    }

    public func receiveIfReady(maximum: Int) throws -> [UInt8]? { nil }
}
