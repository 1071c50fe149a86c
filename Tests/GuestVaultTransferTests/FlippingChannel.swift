import Dispatch
import GuestVaultTransfer
import GuestVaultTransferTesting

/// The sender's side of the sweep: changes one byte (xor 1) of the outgoing stream, and
/// closes the outgoing direction after `closeAfter` bytes.
final class FlippingChannel: ByteChannel, @unchecked Sendable {
    let inner: MemoryChannel
    let flip: Int?
    let closeAfter: Int?
    private var passed = 0

    init(_ inner: MemoryChannel, flip: Int?, closeAfter: Int?) {
        self.inner = inner
        self.flip = flip
        self.closeAfter = closeAfter
    }

    func send(_ bytes: [UInt8]) throws {
        var bytes = bytes
        if let flip, flip >= passed, flip < passed + bytes.count { bytes[flip - passed] ^= 0x01 }
        passed += bytes.count
        try inner.send(bytes)
        if let closeAfter, passed >= closeAfter { inner.outgoing.close() }
    }

    /// A changed length can leave the receiver waiting for bytes the sender will only
    /// send after a reply (a stretched MANIFEST): when both ends wait on empty pipes, the
    /// sender's direction is closed, as a peer that gives up would.
    func receive(maximum: Int) throws -> [UInt8] {
        while true {
            if let bytes = inner.incoming.read(maximum: maximum, waitingAtMost: .milliseconds(2)) { return bytes }
            if inner.outgoing.readerIsWaitingOnEmpty && inner.incoming.readerIsWaitingOnEmpty { inner.outgoing.close() }
        }
    }
}
