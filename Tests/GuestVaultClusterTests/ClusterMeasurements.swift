import Dispatch
import Foundation
import GuestVaultCluster
import GuestVaultCore
import GuestVaultSystem
import GuestVaultTestSupport
import Testing

/// The figures of docs/CLUSTER.md §8, printed from one run (no timed assertions): a
/// durable TPM2_NV_Write round trip through `serve` in cluster mode, the same without a
/// cluster, a bare etcd put, and lease renewals per second. The three writes are
/// interleaved round by round, so that the disk's and the machine's other load falls on
/// all three alike.
@Suite("Cluster measurements", .serialized,
       .enabled(if: EtcdCluster.isAvailable && tool("tpm2_nvwrite") != nil, "needs etcd-server and tpm2-tools (scripts/deps.sh --tests)"))
struct ClusterMeasurements {
    /// A raw TPM data-channel client: NV_DefineSpace and NV_Write with the owner's empty
    /// password (TPM_RS_PW), as a guest driver sends them.
    final class DataChannel {
        let socket: StreamSocket
        init(port: UInt16) throws { socket = try StreamSocket.connect(.tcp(host: "127.0.0.1", port: port)) }

        func command(_ code: UInt32, handles: [UInt32], parameters: [UInt8]) throws -> UInt32 {
            var body: [UInt8] = handles.flatMap(\.bigEndianBytes)
            let session: [UInt8] = UInt32(0x4000_0009).bigEndianBytes + [0, 0, 0x01, 0, 0]   // TPM_RS_PW, no nonce, continue, no hmac
            body += UInt32(session.count).bigEndianBytes + session + parameters
            let command = UInt16(0x8002).bigEndianBytes + UInt32(10 + body.count).bigEndianBytes + code.bigEndianBytes + body
            try socket.send(command)
            var response: [UInt8] = []
            while response.count < 10 || response.count < Int(UInt32(bigEndianBytes: Array(response[2..<6])) ?? 0) {
                let bytes = try socket.receive(maximum: 4096)
                guard !bytes.isEmpty else { throw ClusterError(.clusterProtocol, "the server closed the data channel") }
                response += bytes
            }
            return UInt32(bigEndianBytes: Array(response[6..<10])) ?? 0xFFFF_FFFF
        }

        func define(_ index: UInt32, size: UInt16) throws -> UInt32 {
            let pub = index.bigEndianBytes + UInt16(0x000B).bigEndianBytes + UInt32(0x0006_0006).bigEndianBytes
                + UInt16(0).bigEndianBytes + size.bigEndianBytes
            return try command(0x0000_012A, handles: [0x4000_0001], parameters: [0, 0] + UInt16(pub.count).bigEndianBytes + pub)
        }

        func write(_ index: UInt32, _ data: [UInt8]) throws -> UInt32 {
            try command(0x0000_0137, handles: [0x4000_0001, index], parameters: UInt16(data.count).bigEndianBytes + data + [0, 0])
        }
    }

    @Test("NV_Write in cluster mode next to a plain NV_Write and a bare etcd put; renewals per second")
    func figures() throws {
        let etcd = try EtcdCluster()
        let directory = TemporaryDirectory("gv-cluster-measure")
        let vm = "3d1b9e8a-5a0c-4c8e-9f00-6d3c1b2a4e5f"
        let plainHost = ClusterHost(name: "plain", directory: directory.path)
        let clusterHost = ClusterHost(name: "member", directory: directory.path)
        for host in [plainHost, clusterHost] {
            #expect(try guestvault(["vault", "init", "--vault", host.vault]).status == 0)
        }
        #expect(try guestvault(["cluster", "init", "--vault", clusterHost.vault, "--cluster", "measure", "--member", "member",
                                "--endpoints", etcd.endpoints.joined(separator: ",")]).status == 0)
        let plainState = directory.file("plain.state"), sharedState = directory.file("shared.state")
        #expect(try guestvault(["create", "--vault", plainHost.vault, "--vm", vm, "--tpm", plainState]).status == 0)
        #expect(try guestvault(["create", "--vault", clusterHost.vault, "--vm", vm, "--tpm", sharedState]).status == 0)
        #expect(try plainHost.startServe(plainState, wait: nil), "\(plainHost.log)")
        #expect(try clusterHost.startServe(sharedState, wait: 0), "\(clusterHost.log)")
        defer { plainHost.killServe(); clusterHost.killServe() }

        let plain = try DataChannel(port: plainHost.port), clustered = try DataChannel(port: clusterHost.port)
        let index: UInt32 = 0x0150_0099
        #expect(try plain.define(index, size: 64) == 0)
        #expect(try clustered.define(index, size: 64) == 0)
        let client = try EtcdClient(endpoints: etcd.endpoints)

        let rounds = 200
        var times: [[Double]] = [[], [], []]
        func timed(_ slot: Int, _ round: Int, _ body: () throws -> Void) rethrows {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try body()
            let t1 = DispatchTime.now().uptimeNanoseconds
            if round >= 20 { times[slot].append(Double(t1 - t0) / 1e3) }
        }
        for round in 0..<(rounds + 20) {
            let data = [UInt8](repeating: UInt8(truncatingIfNeeded: round), count: 64)
            var codes: [UInt32] = []
            try timed(0, round) { codes.append(try plain.write(index, data)) }
            try timed(1, round) { codes.append(try clustered.write(index, data)) }
            #expect(codes == [0, 0])
            try timed(2, round) { try client.put("/measure/put", data + data) }
        }
        let medians = times.map { $0.sorted()[$0.count / 2] }

        let lease = try client.grantLease(ttl: 60)
        var renewals = 0
        let start = DispatchTime.now().uptimeNanoseconds
        while DispatchTime.now().uptimeNanoseconds - start < 2_000_000_000 {
            if try client.keepAlive(lease: lease.id) > 0 { renewals += 1 }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        // Eight threads renewing at once (eight serve processes' worth), 2 s.
        let counts = CountBox()
        let concurrentStart = DispatchTime.now().uptimeNanoseconds
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            var mine = 0
            while DispatchTime.now().uptimeNanoseconds - concurrentStart < 2_000_000_000 {
                if (try? client.keepAlive(lease: lease.id)) ?? 0 > 0 { mine += 1 }
            }
            counts.add(mine)
        }
        let concurrentSeconds = Double(DispatchTime.now().uptimeNanoseconds - concurrentStart) / 1e9
        try client.revoke(lease: lease.id)

        print(String(format: "cluster figures: durable NV_Write (64 B), median of %d interleaved rounds: without a cluster %.0f µs, cluster mode %.0f µs; bare etcd put %.0f µs; cluster / (plain + put) = %.2f; lease renewals: %.0f/s from one synchronous client, %.0f/s from 8 threads",
                     rounds, medians[0], medians[1], medians[2], medians[1] / (medians[0] + medians[2]),
                     Double(renewals) / seconds, Double(counts.total) / concurrentSeconds))
        #expect(medians.allSatisfy { $0 > 0 })
    }
}

final class CountBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func add(_ count: Int) { lock.withLock { value += count } }
    var total: Int { lock.withLock { value } }
}
