import CLinuxProcess
#if canImport(Glibc)
import Glibc
#endif

/// A descriptor a poll loop waits on so that another thread, or a signal handler, can
/// wake it at once: the loop then needs no timeout to notice a stop request, and an idle
/// server makes no system call at all (docs/PERFORMANCE.md). A pipe, both ends
/// non-blocking and close-on-exec; ``signal()`` is one write(2), safe in a signal handler.
public final class WakeupEvent: @unchecked Sendable {
    /// Poll this one for readability.
    public let descriptor: Int32
    /// The end ``signal()`` writes to.
    public let signalDescriptor: Int32

    public init() throws {
        var ends: [Int32] = [-1, -1]
        guard guestvault_pipe_cloexec_nonblock(&ends) == 0 else {
            throw SystemError("pipe2", path: "(the server's wake-up)", errno: errno)
        }
        descriptor = ends[0]
        signalDescriptor = ends[1]
    }

    deinit {
        close(descriptor)
        close(signalDescriptor)
    }

    /// Wakes the loop. A full pipe already holds a wake-up, so a failed write loses nothing.
    public func signal() {
        Self.signal(signalDescriptor)
    }

    /// ``signal()`` on a descriptor alone, for a signal handler (no object, no allocation).
    public static func signal(_ descriptor: Int32) {
        var byte: UInt8 = 1
        _ = write(descriptor, &byte, 1)
    }

    /// Takes every pending wake-up (after the poll reported the descriptor readable).
    public func drain() {
        var buffer: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        while withUnsafeMutableBytes(of: &buffer, { read(descriptor, $0.baseAddress, $0.count) }) > 0 {}
    }
}
