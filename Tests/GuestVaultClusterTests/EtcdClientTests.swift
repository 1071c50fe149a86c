import Foundation
import GuestVaultCluster
import GuestVaultCore
import GuestVaultTestSupport
import Testing

/// The etcd client against a real 3-member etcd cluster on loopback.
@Suite("etcd client", .enabled(if: EtcdCluster.isAvailable, "etcd-server is not installed (scripts/deps.sh --tests)"))
struct EtcdClientTests {
    @Test("put, get, list, delete, transactions and leases on a real cluster; a dead endpoint is skipped")
    func roundTrip() throws {
        let etcd = try EtcdCluster()
        // The first endpoint is dead (nothing listens): the client moves on to the next.
        let dead = "http://127.0.0.1:\(try EtcdCluster.freePort())"
        let client = try EtcdClient(endpoints: [dead] + etcd.endpoints, requestTimeout: .seconds(1))

        let revision = try client.put("/t/a", Array("one".utf8))
        #expect(revision > 0)
        let read = try #require(try client.get("/t/a"))
        #expect(read.value == Array("one".utf8))
        #expect(read.createRevision == revision && read.modRevision == revision)
        #expect(try client.get("/t/missing") == nil)
        try client.put("/t/b", [0, 0xFF, 0x80])
        try client.put("/u/c", [1])
        #expect(try client.list(prefix: "/t/").map(\.key) == ["/t/a", "/t/b"])
        #expect(try client.get("/t/b")?.value == [0, 0xFF, 0x80])

        // A transaction runs one branch, conditioned on revisions.
        let won = try client.transaction(if: [EtcdCompare("/t/a", .modRevision(revision))], then: [.put("/t/a", [2])], else: [.get("/t/a")])
        #expect(won.succeeded)
        let lost = try client.transaction(if: [EtcdCompare("/t/a", .modRevision(revision))], then: [.put("/t/a", [3])], else: [.get("/t/a")])
        #expect(!lost.succeeded)
        #expect(lost.ranges.first??.value == [2])

        // A key on a lease disappears when the lease is revoked; an ended lease renews to 0.
        let lease = try client.grantLease(ttl: 5)
        #expect(lease.ttl == 5)
        try client.put("/t/leased", [1], lease: lease.id)
        #expect(try client.keepAlive(lease: lease.id) > 0)
        try client.revoke(lease: lease.id)
        #expect(try client.get("/t/leased") == nil)
        #expect(try client.keepAlive(lease: lease.id) == 0)
        #expect(try client.delete("/t/b") == 1)
        #expect(try client.get("/t/b") == nil)
    }

    @Test("a client whose endpoints all refuse reports the cluster unavailable, naming the endpoints")
    func nothingAnswers() throws {
        let port = try EtcdCluster.freePort()
        let client = try EtcdClient(endpoints: ["http://127.0.0.1:\(port)"], requestTimeout: .milliseconds(500))
        let error = try #require(throws: ClusterError.self) { try client.get("/x") }
        #expect(error.code == .clusterUnavailable)
        #expect(error.message.contains("127.0.0.1:\(port)"))
        #expect(ErrorChain.category(of: error) == .timeout)
    }

    @Test("configuration is refused when it cannot work", arguments: [[String](), ["ftp://x"], ["https://127.0.0.1:1"], ["not a url"]])
    func badEndpoints(_ endpoints: [String]) throws {
        let error = try #require(throws: ClusterError.self) { _ = try EtcdClient(endpoints: endpoints) }
        #expect(error.code == .clusterConfiguration)
    }
}
