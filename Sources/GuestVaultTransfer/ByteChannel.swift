public import GuestVaultSystem

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
    /// Called by the receiver once the peer is authenticated and its manifest accepted:
    /// a channel with a handshake deadline lifts it here, and a listener that serves one
    /// transfer at a time claims it (throwing if another has it). The default does
    /// nothing.
    func handshakeDidComplete() throws
}

extension ByteChannel {
    public func receive(into buffer: inout [UInt8], at offset: Int, maximum: Int) throws -> Int {
        let bytes = try receive(maximum: maximum)
        buffer.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
        return bytes.count
    }

    public func receiveIfReady(maximum: Int) throws -> [UInt8]? { nil }

    public func handshakeDidComplete() throws {}
}

extension StreamSocket: ByteChannel {}
