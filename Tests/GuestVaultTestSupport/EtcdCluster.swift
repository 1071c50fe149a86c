import Foundation
import Glibc

/// A real etcd cluster on loopback for tests: `count` members of Debian's etcd 3.4, each
/// with its own data directory under one temporary directory, fast elections (50 ms
/// heartbeats, 500 ms election timeout), killed (SIGKILL) when the harness is released.
/// Members can be killed and started again to take the quorum away and give it back.
public final class EtcdCluster: @unchecked Sendable {
    public struct Member: Sendable {
        public let name: String
        public let clientPort: UInt16
        public let peerPort: UInt16
        public var clientURL: String { "http://127.0.0.1:\(clientPort)" }
        var peerURL: String { "http://127.0.0.1:\(peerPort)" }
    }

    public static let binary = "/usr/bin/etcd"
    public static var isAvailable: Bool { FileManager.default.isExecutableFile(atPath: binary) }

    public let directory: TemporaryDirectory
    public let members: [Member]
    private let lock = NSLock()
    private var processes: [Int: Process] = [:]

    public var endpoints: [String] { members.map(\.clientURL) }

    public init(count: Int = 3) throws {
        directory = TemporaryDirectory("gv-etcd")
        var members: [Member] = []
        var used: Set<UInt16> = []
        for index in 0..<count {
            let client = try Self.freePort(avoiding: used); used.insert(client)
            let peer = try Self.freePort(avoiding: used); used.insert(peer)
            members.append(Member(name: "etcd\(index)", clientPort: client, peerPort: peer))
        }
        self.members = members
        for index in members.indices { try start(index, fresh: true) }
        guard waitUntil(attempts: 300, interval: 50_000, { self.isHealthy() }) else {
            throw EtcdClusterError.notHealthy(log: lastLog())
        }
    }

    deinit {
        for index in members.indices { kill(index) }
    }

    /// Starts member `index` (again): from its data directory, into the same cluster.
    public func start(_ index: Int, fresh: Bool = false) throws {
        let member = members[index]
        let initial = members.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = [
            "--name", member.name,
            "--data-dir", directory.file(member.name),
            "--listen-client-urls", member.clientURL, "--advertise-client-urls", member.clientURL,
            "--listen-peer-urls", member.peerURL, "--initial-advertise-peer-urls", member.peerURL,
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", "gv-\(members[0].clientPort)",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-outputs", directory.file("\(member.name).log"),
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        lock.withLock { processes[index] = process }
    }

    /// Kills member `index` with SIGKILL and waits until it is gone.
    public func kill(_ index: Int) {
        guard let process = lock.withLock({ processes.removeValue(forKey: index) }) else { return }
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Whether every running member reports healthy (a leader, a committed read).
    public func isHealthy(members indices: [Int]? = nil) -> Bool {
        let chosen = (indices ?? Array(members.indices)).map { members[$0].clientURL }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/etcdctl")
        process.arguments = ["--endpoints", chosen.joined(separator: ","), "--command-timeout", "1s", "endpoint", "health"]
        process.environment = ["ETCDCTL_API": "3"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }

    private func lastLog() -> String {
        let text = (try? String(contentsOfFile: directory.file("\(members[0].name).log"), encoding: .utf8)) ?? ""
        return String(text.suffix(2000))
    }

    /// A TCP port on 127.0.0.1 that nothing listens on right now.
    public static func freePort(avoiding used: Set<UInt16> = []) throws -> UInt16 {
        for _ in 0..<64 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { break }
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = 0
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else { continue }
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            }
            let port = UInt16(bigEndian: address.sin_port)
            // etcd's peer and client ports stay below the ephemeral range's busy end.
            if port > 1024, !used.contains(port) { return port }
        }
        throw EtcdClusterError.noFreePort
    }
}

public enum EtcdClusterError: Error, CustomStringConvertible {
    case notHealthy(log: String)
    case noFreePort

    public var description: String {
        switch self {
        case .notHealthy(let log): "the test etcd cluster did not become healthy: \(log)"
        case .noFreePort: "no free TCP port on 127.0.0.1"
        }
    }
}
