import Dispatch
import Foundation
import GuestVaultCore
import GuestVaultSystem
import GuestVaultTPM
import Synchronization

/// What one vTPM server process costs on the host, measured the same way for
/// `guestvault serve` and for swtpm (the same client, the same sockets): its resident
/// memory, how long from exec until its data channel answers, and TPM command round
/// trips. Behind `guestvault benchmark --footprint`.
enum ServerFootprint {
    /// A data channel client that sends one TPM command and reads the whole response.
    final class Client {
        let socket: StreamSocket
        var buffer = [UInt8](repeating: 0, count: 4096)

        init(_ address: StreamSocket.Address) throws {
            socket = try StreamSocket.connect(address)
        }

        deinit { socket.close() }

        /// Sends `command`, returns the response code (the response is read whole and
        /// dropped).
        @discardableResult
        func roundTrip(_ command: [UInt8]) throws -> UInt32 {
            try socket.send(command)
            var have = 0
            var expected = 10
            while have < expected {
                let n = try socket.receive(into: &buffer, at: have, maximum: buffer.count - have)
                guard n > 0 else { throw TPMEngineError(.malformed, "the server closed the data channel") }
                have += n
                if have >= 6 {
                    expected = Int(UInt32(bigEndianBytes: buffer[2..<6]) ?? 0)
                    guard expected >= 10, expected <= buffer.count else {
                        throw TPMEngineError(.malformed, "the server's response claims \(expected) bytes")
                    }
                }
            }
            return UInt32(bigEndianBytes: buffer[6..<10]) ?? 0
        }
    }

    /// Memory of process `pid` from /proc/PID/smaps_rollup, in KiB.
    struct Memory: Sendable, Codable {
        var rssKiB: Int
        var pssKiB: Int
        var privateKiB: Int
        var anonymousKiB: Int
    }

    static func memory(pid: Int32) throws -> Memory {
        let text = try String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8)
        var fields: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, parts[0].hasSuffix(":"), let value = Int(parts[1]) else { continue }
            fields[String(parts[0].dropLast())] = value
        }
        return Memory(rssKiB: fields["Rss"] ?? 0, pssKiB: fields["Pss"] ?? 0,
                      privateKiB: (fields["Private_Clean"] ?? 0) + (fields["Private_Dirty"] ?? 0),
                      anonymousKiB: fields["Anonymous"] ?? 0)
    }

    /// Nanoseconds `pid` has run on a CPU, all its threads (the first field of each
    /// thread's /proc schedstat); nil when the kernel does not keep it.
    static func cpuNanoseconds(pid: Int32) -> UInt64? {
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return nil }
        var total: UInt64 = 0
        for task in tasks {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/schedstat", encoding: .utf8),
                  let first = text.split(separator: " ").first, let value = UInt64(first) else { return nil }
            total += value
        }
        return total
    }

    /// Resident KiB per mapping name (file path, [heap], [anon], ...) of `pid`, largest
    /// first: what each library contributes.
    static func residentByMapping(pid: Int32) throws -> [(name: String, kib: Int)] {
        let text = try String(contentsOfFile: "/proc/\(pid)/smaps", encoding: .utf8)
        var totals: [String: Int] = [:]
        var current = "[anon]"
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if let first = parts.first, first.contains("-"), !first.hasSuffix(":") {
                current = parts.count >= 6 ? parts[5...].joined(separator: " ") : "[anon]"
            } else if parts.first == "Rss:", parts.count >= 2, let value = Int(parts[1]) {
                totals[current, default: 0] += value
            }
        }
        return totals.map { ($0.key, $0.value) }.sorted { $0.kib > $1.kib }
    }

    /// Connects to `address` until a TPM2_GetRandom(16) round trip succeeds, polling
    /// every 100 µs; gives up after `limit` seconds.
    static func waitForGetRandom(_ address: StreamSocket.Address, limit: Double = 10) throws {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(limit * 1e9)
        let command = TPMCommand.getRandom(16).bytes
        while DispatchTime.now().uptimeNanoseconds < deadline {
            if let client = try? Client(address), let code = try? client.roundTrip(command), code == 0 { return }
            usleep(100)
        }
        throw TPMEngineError(.malformed, "nothing answered TPM2_GetRandom on \(address) within \(limit) s")
    }

    /// Median microseconds of a TPM2_GetRandom(16) round trip over one connection
    /// (`rounds` after 200 not counted).
    static func getRandomRoundTrip(_ address: StreamSocket.Address, rounds: Int) throws -> Double {
        let client = try Client(address)
        let command = TPMCommand.getRandom(16).bytes
        var times: [Double] = []
        times.reserveCapacity(rounds)
        for i in 0..<(rounds + 200) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let code = try client.roundTrip(command)
            let t1 = DispatchTime.now().uptimeNanoseconds
            guard code == 0 else { throw TPMEngineError(.malformed, "TPM2_GetRandom answered \(code)") }
            if i >= 200 { times.append(Double(t1 - t0) / 1e3) }
        }
        return times.sorted()[times.count / 2]
    }

    /// Median microseconds of a TPM2_GetRandom(16) round trip to `a` and to `b`, each
    /// over one connection, measured in alternating blocks of 50 so that both see the
    /// same machine (an idle virtual CPU wakes slower than a busy one: measured one after
    /// the other, whichever went first in a pair paid for it).
    ///
    /// With `pin`, this thread and every thread of the processes `pin` names run on CPU 0
    /// for the measurement: the client and server then never wait for another virtual
    /// CPU to wake up, which is what the two servers' own code costs.
    static func getRandomPair(_ a: StreamSocket.Address, _ b: StreamSocket.Address, rounds: Int, pin: [Int32] = []) throws -> (a: Double, b: Double) {
        if !pin.isEmpty {
            // sched_setaffinity is not in Swift's Glibc module: util-linux's taskset.
            let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")).flatMap { Int32($0.split(separator: "/").last ?? "") }
            let all = "0-\(max(0, ProcessInfo.processInfo.activeProcessorCount - 1))"
            func taskset(_ cpus: String) {
                for pid in pin { runTaskset(["-a", "-p", "-c", cpus, String(pid)]) }
                if let me { runTaskset(["-p", "-c", cpus, String(me)]) }
            }
            taskset("0")
            defer { taskset(all) }
            return try getRandomPair(a, b, rounds: rounds)
        }
        let clients = [try Client(a), try Client(b)]
        let command = TPMCommand.getRandom(16).bytes
        var times: [[Double]] = [[], []]
        for client in clients { for _ in 0..<200 { try client.roundTrip(command) } }
        for block in 0..<max(1, rounds / 50) {
            for which in block % 2 == 0 ? [0, 1] : [1, 0] {
                for _ in 0..<50 {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    let code = try clients[which].roundTrip(command)
                    let t1 = DispatchTime.now().uptimeNanoseconds
                    guard code == 0 else { throw TPMEngineError(.malformed, "TPM2_GetRandom answered \(code)") }
                    times[which].append(Double(t1 - t0) / 1e3)
                }
            }
        }
        return (times[0].sorted()[times[0].count / 2], times[1].sorted()[times[1].count / 2])
    }

    static func runTaskset(_ arguments: [String]) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/taskset")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return }
        process.waitUntilExit()
    }

    /// TPM2_NV_DefineSpace of a 64-byte ordinary index (owner auth empty).
    static func defineNV(_ client: Client, index: UInt32) throws {
        var define = ByteWriter()
        var pub = ByteWriter()
        pub.u32(index); pub.u16(TPMConstant.algSHA256); pub.u32(0x0006_0006); pub.u16(0); pub.u16(64)
        define.u16(0)
        define.sized(pub.bytes)
        let code = try client.roundTrip(TPMCommand(code: TPMConstant.ccNVDefineSpace, handles: [TPMConstant.rhOwner], authorizations: 1,
                                                   parameters: define.bytes).bytes)
        guard code == 0 else { throw TPMEngineError(.malformed, "TPM2_NV_DefineSpace answered \(code)") }
    }

    /// A TPM2_NV_Write of 64 bytes (all `fill`) at offset 0 of `index`.
    static func nvWriteCommand(index: UInt32, fill: UInt8) -> [UInt8] {
        var w = ByteWriter()
        w.sized([UInt8](repeating: fill, count: 64))
        w.u16(0)
        return TPMCommand(code: TPMConstant.ccNVWrite, handles: [TPMConstant.rhOwner, index], authorizations: 1, parameters: w.bytes).bytes
    }

    /// Every client writes its index as fast as it can, all at once, for `seconds`;
    /// returns the NV writes completed per second over all of them.
    static func concurrentNVWrites(_ addresses: [StreamSocket.Address], index: UInt32, seconds: Double) throws -> Double {
        let clients = try addresses.map { try Client($0) }
        for client in clients { try defineNV(client, index: index) }
        let done = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let failure = Mutex<String?>(nil)
        let start = DispatchTime.now().uptimeNanoseconds
        let threads = clients.enumerated().map { number, client in
            nonisolated(unsafe) let client = client
            let thread = Thread {
                var fill: UInt8 = 0
                while !stop.load(ordering: .relaxed) {
                    fill &+= 1
                    do {
                        let code = try client.roundTrip(nvWriteCommand(index: index, fill: fill))
                        guard code == 0 else { throw TPMEngineError(.malformed, "TPM2_NV_Write answered \(code)") }
                        done.add(1, ordering: .relaxed)
                    } catch {
                        failure.withLock { $0 = $0 ?? "server \(number): \(error)" }
                        return
                    }
                }
            }
            thread.stackSize = 256 << 10
            return thread
        }
        for thread in threads { thread.start() }
        usleep(UInt32(seconds * 1e6))
        let count = done.load(ordering: .relaxed)
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        stop.store(true, ordering: .relaxed)
        // The threads end after their write in flight; give them time to leave.
        while threads.contains(where: { $0.isExecuting }) { usleep(1_000) }
        if let message = failure.withLock({ $0 }) { throw TPMEngineError(.malformed, message) }
        return Double(count) / elapsed
    }

    /// Cache flushes the block device under `path` completed so far (/sys/block/DEV/stat,
    /// field 16), or nil where the kernel does not count them. Every fdatasync or fsync
    /// that reaches a disk with a volatile cache is one.
    static func flushCount(under path: String) -> Int? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        let major = Int((info.st_dev >> 8) & 0xfff), minor = Int((info.st_dev & 0xff) | ((info.st_dev >> 12) & 0xfff00))
        guard let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/sys/dev/block/\(major):\(minor)") else { return nil }
        // A partition counts nothing of its own: its disk is the directory above it.
        let url = URL(fileURLWithPath: link)
        let candidates = [url.lastPathComponent, url.deletingLastPathComponent().lastPathComponent]
        guard let text = candidates.lazy.compactMap({ try? String(contentsOfFile: "/sys/block/\($0)/stat", encoding: .utf8) }).first else { return nil }
        let fields = text.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 16 else { return nil }
        return Int(fields[15])
    }
}
