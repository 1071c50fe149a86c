import Dispatch
import Foundation
public import GuestVaultCore
public import GuestVaultSystem
public import Logging
import Synchronization

/// Timeouts of a transfer connection, checked where they are given: finite, positive
/// and at most a day, so no conversion of a number a user typed can trap.
public struct TransferTimeouts: Sendable, Equatable {
    /// The longest a peer may send (or take) nothing.
    public let idle: Double
    /// The longest a receiver waits for a connection's hello and manifest (like sshd's
    /// LoginGraceTime): a connection that has not become a transfer by then is closed.
    public let handshake: Double

    public static let maximum: Double = 86_400

    public init(idle: Double, handshake: Double = 10) throws {
        for (value, name) in [(idle, "--timeout"), (handshake, "--handshake-timeout")] {
            guard value.isFinite, value > 0, value <= Self.maximum else {
                throw TransferError(.invalidTimeout, "\(name) must be a number of seconds above 0 and at most \(Int(Self.maximum)), not \(value)")
            }
        }
        self.idle = idle
        self.handshake = handshake
    }
}

extension ErrorCode {
    /// A timeout given to a transfer is not a usable number of seconds.
    public static let invalidTimeout = ErrorCode("invalidTimeout", .usage)
    /// Another transfer holds the listener.
    public static let busy = ErrorCode("busy", .locked)
}

/// Serves one transfer on a listening socket the way a daemon serves logins: every
/// connection gets its own thread and a handshake deadline; connections that are not a
/// GuestVault sender, are not accepted, or stall are closed without using up the
/// receive; while one transfer is in progress, further senders are refused with an
/// ERROR frame ("busy"); at most `maximumPending` connections are in their handshake at
/// once (more are closed at once). Returns the result of the first connection that
/// became a transfer (its sender authenticated and its manifest accepted).
public enum ReceiveListener {
    public static func receiveOne(
        on listener: StreamSocket, timeouts: TransferTimeouts, maximumPending: Int = 8,
        logger: Logger = ContainerTransfer.silentLogger,
        receive: @escaping @Sendable (ByteChannel) throws -> ContainerTransfer.Report
    ) throws -> ContainerTransfer.Report {
        let shared = Shared()
        while true {
            if let result = shared.state.withLock({ $0.result }) { return try result.get() }
            let ready = try StreamSocket.poll([listener.descriptor], timeout: 100)
            guard !ready.isEmpty else { continue }
            let connection = try listener.accept()
            let admitted = shared.state.withLock { state -> Bool in
                guard state.result == nil, state.pending < maximumPending else { return false }
                state.pending += 1
                return true
            }
            guard admitted else {
                logger.warning("a connection was refused: \(maximumPending) are in their handshake already")
                connection.close()
                continue
            }
            let channel = DeadlineChannel(connection, timeouts: timeouts, claim: {
                try shared.state.withLock { state in
                    guard !state.claimed else {
                        throw TransferError(.busy, "another transfer is in progress on this listener; try again when it is done")
                    }
                    state.claimed = true
                }
            })
            Thread.detachNewThread {
                let result = Result { try receive(channel) }
                connection.close()
                shared.state.withLock { state in
                    state.pending -= 1
                    if channel.hasClaimed { state.result = result }
                }
                if case .failure(let error) = result, !channel.hasClaimed {
                    logger.notice("a connection that did not become a transfer was closed: \(ErrorChain.message(of: error))")
                }
            }
        }
    }

    private final class Shared: Sendable {
        let state = Mutex(State())
    }

    private struct State: Sendable {
        var pending = 0
        var claimed = false
        var result: Result<ContainerTransfer.Report, any Error>?
    }
}

/// A socket with an overall handshake deadline on top of its idle timeout: until the
/// receiver calls ``handshakeDidComplete()``, every read and write waits at most until
/// the deadline, so a peer that trickles one byte at a time cannot hold the connection.
final class DeadlineChannel: ByteChannel, @unchecked Sendable {
    let socket: StreamSocket
    let timeouts: TransferTimeouts
    private let claim: @Sendable () throws -> Void
    private let deadline: UInt64
    /// Touched only by the connection's own thread, read by the listener after it ends.
    private let state = Mutex((inHandshake: true, claimed: false))

    init(_ socket: StreamSocket, timeouts: TransferTimeouts, claim: @escaping @Sendable () throws -> Void) {
        self.socket = socket
        self.timeouts = timeouts
        self.claim = claim
        deadline = DispatchTime.now().uptimeNanoseconds &+ UInt64(timeouts.handshake * 1e9)
    }

    var hasClaimed: Bool { state.withLock { $0.claimed } }

    /// Sets the socket's timeout for the next operation: the idle timeout, or less if the
    /// handshake deadline comes sooner.
    private func arm() throws {
        guard state.withLock({ $0.inHandshake }) else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        let remaining = now < deadline ? Double(deadline - now) / 1e9 : 0
        guard remaining >= 0.001 else { throw handshakeExpired() }
        try socket.setTimeout(seconds: min(timeouts.idle, remaining))
    }

    private func handshakeExpired() -> TransferError {
        TransferError(.timeout, "the peer did not complete the handshake within \(timeouts.handshake) s; connection closed")
    }

    private func during<T>(_ body: () throws -> T) throws -> T {
        try arm()
        do { return try body() } catch let error as SystemError where error.isTimeout && state.withLock({ $0.inHandshake }) {
            let now = DispatchTime.now().uptimeNanoseconds
            if now >= deadline { throw handshakeExpired() }
            throw error
        }
    }

    func send(_ bytes: [UInt8]) throws { try during { try socket.send(bytes) } }

    func receive(maximum: Int) throws -> [UInt8] { try during { try socket.receive(maximum: maximum) } }

    func receive(into buffer: inout [UInt8], at offset: Int, maximum: Int) throws -> Int {
        try during { try socket.receive(into: &buffer, at: offset, maximum: maximum) }
    }

    func receiveIfReady(maximum: Int) throws -> [UInt8]? { try socket.receiveIfReady(maximum: maximum) }

    func handshakeDidComplete() throws {
        state.withLock { $0.inHandshake = false }
        try socket.setTimeout(seconds: timeouts.idle)
        try claim()
        state.withLock { $0.claimed = true }
    }
}
