#if canImport(Glibc)
import Glibc
#endif

/// The descriptors a server loop waits on, kept between iterations so that a wait costs
/// no allocation once the set has reached its size (``StreamSocket/poll(_:timeout:)``
/// builds three arrays per call). Refill it with ``removeAll()`` and ``add(_:)``, call
/// ``wait(timeout:)``, then ask ``isReady(_:)`` by the index ``add(_:)`` returned.
public struct PollSet {
    private var entries: [pollfd] = []

    public init(capacity: Int = 8) {
        entries.reserveCapacity(max(capacity, 1))
    }

    /// The number of descriptors in the set.
    public var count: Int { entries.count }

    /// Empties the set, keeping its storage.
    public mutating func removeAll() {
        entries.removeAll(keepingCapacity: true)
    }

    /// Adds `descriptor` (waiting until it is readable or closed); returns its index.
    @discardableResult
    public mutating func add(_ descriptor: Int32) -> Int {
        entries.append(pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0))
        return entries.count - 1
    }

    /// Waits until a descriptor of the set is readable (or closed), or `timeout`
    /// milliseconds (-1: forever). Returns how many are ready; 0 after a timeout or a
    /// signal (EINTR), when no entry is ready.
    @discardableResult
    public mutating func wait(timeout: Int32) throws -> Int {
        let n = entries.withUnsafeMutableBufferPointer { Glibc.poll($0.baseAddress, nfds_t($0.count), timeout) }
        if n < 0 {
            let error = errno
            for i in entries.indices { entries[i].revents = 0 }
            if error == EINTR { return 0 }
            throw SystemError("poll", path: "sockets", errno: error)
        }
        return Int(n)
    }

    /// Whether the descriptor at `index` (from ``add(_:)``) was ready after the last wait.
    public func isReady(_ index: Int) -> Bool {
        entries.indices.contains(index) && entries[index].revents != 0
    }
}
