package import Dispatch
import GuestVaultCore
import GuestVaultTransfer
import Synchronization

// MARK: In-memory byte streams

/// One direction of an in-memory byte stream: writes never block; a read waits for bytes
/// or for the end. One reader at a time.
package final class BytePipe: Sendable {
    private struct State {
        var bytes: [UInt8] = []
        var start = 0
        var closed = false
        /// The reader is blocked on an empty, open pipe.
        var readerWaiting = false
    }

    private let state = Mutex(State())
    /// Signalled after every write and on close; a reader re-checks after each wake.
    private let ready = DispatchSemaphore(value: 0)

    package init() {}

    package func write(_ bytes: [UInt8]) throws {
        let accepted = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.bytes += bytes
            return true
        }
        guard accepted else { throw TransferError(.io, "the in-memory stream was closed; \(bytes.count) bytes were not sent") }
        ready.signal()
    }

    /// Up to `maximum` bytes; empty once the pipe is closed and drained.
    package func read(maximum: Int) -> [UInt8] {
        while true {
            if let bytes = take(maximum: maximum) { return bytes }
            ready.wait()
        }
    }

    /// Like ``read(maximum:)``, but nil if nothing came within `timeout`.
    package func read(maximum: Int, waitingAtMost timeout: DispatchTimeInterval) -> [UInt8]? {
        let deadline = DispatchTime.now() + timeout
        while true {
            if let bytes = take(maximum: maximum) { return bytes }
            if ready.wait(timeout: deadline) == .timedOut {
                state.withLock { $0.readerWaiting = false }
                return take(maximum: maximum)
            }
        }
    }

    /// True while the reader waits on this pipe with nothing in it and the writer has not
    /// closed it. A reader writes everything it has to say before it waits, so if the
    /// peer also waits on an empty pipe, neither will ever move (a test's stall check).
    package var readerIsWaitingOnEmpty: Bool {
        state.withLock { $0.readerWaiting && $0.start == $0.bytes.count && !$0.closed }
    }

    /// Bytes if there are any, empty at the end, nil if the reader must wait.
    private func take(maximum: Int) -> [UInt8]? {
        state.withLock { state in
            if state.start < state.bytes.count {
                state.readerWaiting = false
                let count = min(maximum, state.bytes.count - state.start)
                let out = Array(state.bytes[state.start..<(state.start + count)])
                state.start += count
                if state.start == state.bytes.count {
                    state.bytes.removeAll(keepingCapacity: true)
                    state.start = 0
                }
                return out
            }
            if state.closed { return [] }
            state.readerWaiting = true
            return nil
        }
    }

    /// No more writes; the reader gets what is left, then the end of the stream.
    package func close() {
        state.withLock { $0.closed = true }
        ready.signal()
    }
}

/// One end of an in-memory duplex byte stream. `observe` sees every `send`, in order,
/// before the bytes go out (for recording a transcript).
package final class MemoryChannel: ByteChannel, Sendable {
    package let incoming: BytePipe
    package let outgoing: BytePipe
    private let observe: (@Sendable ([UInt8]) -> Void)?

    package init(incoming: BytePipe, outgoing: BytePipe, observe: (@Sendable ([UInt8]) -> Void)? = nil) {
        self.incoming = incoming
        self.outgoing = outgoing
        self.observe = observe
    }

    /// Two connected ends.
    package static func pair(
        observeFirst: (@Sendable ([UInt8]) -> Void)? = nil, observeSecond: (@Sendable ([UInt8]) -> Void)? = nil
    ) -> (MemoryChannel, MemoryChannel) {
        let forward = BytePipe(), backward = BytePipe()
        return (MemoryChannel(incoming: backward, outgoing: forward, observe: observeFirst),
                MemoryChannel(incoming: forward, outgoing: backward, observe: observeSecond))
    }

    package func send(_ bytes: [UInt8]) throws {
        observe?(bytes)
        try outgoing.write(bytes)
    }

    package func receive(maximum: Int) throws -> [UInt8] { incoming.read(maximum: maximum) }

    package func receiveIfReady(maximum: Int) throws -> [UInt8]? { incoming.read(maximum: maximum, waitingAtMost: .nanoseconds(0)) }

    /// Ends both directions (wakes a peer blocked in `receive`).
    package func close() {
        incoming.close()
        outgoing.close()
    }
}
