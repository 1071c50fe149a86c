import Glibc

/// Checks `condition` every `interval` microseconds until it holds, at most `attempts`
/// times; returns whether it held. (A `for … where` loop would keep evaluating the
/// condition after it held, which for a connection probe means hundreds of connections
/// to a server that answers one at a time.)
@discardableResult
public func waitUntil(attempts: Int = 500, interval: UInt32 = 10_000, _ condition: () -> Bool) -> Bool {
    for _ in 0..<attempts {
        if condition() { return true }
        usleep(interval)
    }
    return condition()
}
