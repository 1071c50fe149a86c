public import Foundation
import GuestVaultSystem

/// Two free TCP ports P (even) and P+1 on 127.0.0.1, found by listening on both and
/// closing them again (0 when 100 tries found none). Another process may take them
/// before the caller does; tests that start a server retry or fail with its message.
public func freeLoopbackPortPair() -> UInt16 {
    for _ in 0..<100 {
        let candidate = UInt16.random(in: 20000...60000) & ~1
        if let a = try? StreamSocket.listen(.tcp(host: "127.0.0.1", port: candidate)),
           let b = try? StreamSocket.listen(.tcp(host: "127.0.0.1", port: candidate + 1)) {
            a.close(); b.close()
            return candidate
        }
    }
    return 0
}

/// Waits until something accepts on 127.0.0.1:`port` (a server child coming up) for at
/// most `seconds`; false when `process` ended first or the time ran out.
public func waitUntilAccepting(port: UInt16, while process: Process, seconds: Double = 20) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if (try? StreamSocket.connect(.tcp(host: "127.0.0.1", port: port))) != nil { return true }
        if !process.isRunning { return false }
        usleep(20_000)
    }
    return false
}
