import Dispatch
import Foundation
import GuestVaultCluster
import GuestVaultTestSupport
@_spi(Benchmarking) import GuestVaultTPM
import Testing

/// The figures of docs/CLUSTER.md §8, printed from one run (no timed assertions): a
/// durable TPM2_NV_Write round trip through `serve` in cluster mode, the same without a
/// cluster, a bare etcd put, and lease renewals per second from one synchronous client.
@Suite("Cluster measurements", .serialized,
       .enabled(if: EtcdCluster.isAvailable && tool("tpm2_nvwrite") != nil, "needs etcd-server and tpm2-tools (scripts/deps.sh --tests)"))
struct ClusterMeasurements {
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

        let rounds = 200
        #expect(try plainHost.startServe(plainState, wait: 0), "\(plainHost.log)")
        let plain = try TPMBenchmarks.nvWriteRoundTrip(port: plainHost.port, index: 0x0150_0099, rounds: rounds)
        plainHost.killServe()
        #expect(try clusterHost.startServe(sharedState, wait: 0), "\(clusterHost.log)")
        let clustered = try TPMBenchmarks.nvWriteRoundTrip(port: clusterHost.port, index: 0x0150_0099, rounds: rounds)
        clusterHost.killServe()

        let client = try EtcdClient(endpoints: etcd.endpoints)
        var puts: [Double] = []
        for round in 0..<(rounds + 20) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try client.put("/measure/put", [UInt8](repeating: UInt8(truncatingIfNeeded: round), count: 150))
            let t1 = DispatchTime.now().uptimeNanoseconds
            if round >= 20 { puts.append(Double(t1 - t0) / 1e3) }
        }
        let put = puts.sorted()[puts.count / 2]

        let lease = try client.grantLease(ttl: 60)
        var renewals = 0
        let start = DispatchTime.now().uptimeNanoseconds
        while DispatchTime.now().uptimeNanoseconds - start < 2_000_000_000 {
            #expect(try client.keepAlive(lease: lease.id) > 0)
            renewals += 1
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

        let ratio = clustered / (plain + put)
        print(String(format: "cluster figures: NV_Write durable, median of %d: plain %.0f µs, cluster mode %.0f µs; bare etcd put %.0f µs; cluster / (plain + put) = %.2f; lease renewals: %.0f/s from one synchronous client, %.0f/s from 8 threads",
                     rounds, plain, clustered, put, ratio, Double(renewals) / seconds, Double(counts.total) / concurrentSeconds))
        #expect(plain > 0 && clustered > 0 && put > 0)
    }
}

final class CountBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func add(_ count: Int) { lock.withLock { value += count } }
    var total: Int { lock.withLock { value } }
}
