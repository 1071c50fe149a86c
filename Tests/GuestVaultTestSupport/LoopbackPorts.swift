public import Foundation
import GuestVaultSystem

/// Two free TCP ports P (even) and P+1 on 127.0.0.1, found by listening on both and
/// closing them again (0 when 100 tries found none), below the kernel's ephemeral range:
/// there the source port of any other test's outgoing connection could take one of
/// them between this check and the server's bind (it happened in CI: "Address already
/// in use"). Another test may still pick the same pair; that is rare, not routine.
public func freeLoopbackPortPair() -> UInt16 {
    let ephemeralStart = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
        .flatMap { $0.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.flatMap { UInt16($0) } } ?? 32768
    let upper = max(ephemeralStart, 12002) - 2
    for _ in 0..<100 {
        let candidate = UInt16.random(in: 10000...upper) & ~1
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
