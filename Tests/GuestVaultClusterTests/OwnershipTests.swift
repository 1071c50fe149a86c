import Foundation
import GuestVaultCluster
import GuestVaultCore
import GuestVaultTestSupport
import Synchronization
import Testing

/// VM ownership leases, fencing and the cluster-wide rollback counter on a real
/// 3-member etcd cluster: the guarantees hold in etcd's transactions, not in the client.
@Suite("VM ownership", .enabled(if: EtcdCluster.isAvailable, "etcd-server is not installed (scripts/deps.sh --tests)"))
struct OwnershipTests {
    let vm = "6f1d2c3b-4a59-4e68-8d7c-0b1a2f3e4d5c"

    @Test("one owner at a time; release hands over at once; the old owner's commits are refused after")
    func exclusiveOwnership() throws {
        let etcd = try EtcdCluster()
        let client = try EtcdClient(endpoints: etcd.endpoints, requestTimeout: .seconds(1))
        let keys = try ClusterKeys(cluster: "test")
        let a = try VMOwnership.acquire(client: client, keys: keys, vm: vm, member: "host-a", ttl: 5)
        #expect(a.recordedAtAcquire == nil)
        try a.authorize(generation: 1)
        try a.authorize(generation: 2)

        let taken = try #require(throws: ClusterError.self) {
            _ = try VMOwnership.acquire(client: client, keys: keys, vm: vm, member: "host-b", ttl: 5)
        }
        #expect(taken.code == .clusterOwnedElsewhere)
        #expect(taken.message.contains("host-a"))

        a.release()
        let b = try VMOwnership.acquire(client: client, keys: keys, vm: vm, member: "host-b", ttl: 5, wait: .seconds(5))
        defer { b.release() }
        #expect(b.token > a.token)
        #expect(b.recordedAtAcquire == RecordedGeneration(generation: 2, token: a.token, member: "host-a"))
        let fenced = try #require(throws: ClusterError.self) { try a.authorize(generation: 3) }
        #expect(fenced.code == .clusterFenced)
        try b.authorize(generation: 3)
        #expect(try ClusterCounter(client: client, keys: keys).recorded(vm: vm)?.generation == 3)
    }

    @Test("a zombie owner (its lease ended while it was paused) cannot make any commit visible")
    func zombieIsFenced() throws {
        let etcd = try EtcdCluster()
        let client = try EtcdClient(endpoints: etcd.endpoints, requestTimeout: .seconds(1))
        let keys = try ClusterKeys(cluster: "test")
        let zombie = try VMOwnership.acquire(client: client, keys: keys, vm: vm, member: "host-a", ttl: 5)
        try zombie.authorize(generation: 7)
        // What a pause past the lease does, seen from etcd: the lease ends (here at once,
        // by revoking it behind the owner's back) and another member takes the VM. The
        // zombie's own keep-alive has not noticed yet.
        try client.revoke(lease: zombie.lease)
        let next = try VMOwnership.acquire(client: client, keys: keys, vm: vm, member: "host-b", ttl: 5, wait: .seconds(5))
        defer { next.release() }
        #expect(next.recordedAtAcquire?.generation == 7)

        let error = try #require(throws: ClusterError.self) { try zombie.authorize(generation: 8) }
        #expect(error.code == .clusterFenced)
        #expect(ErrorChain.category(of: error) == .locked)
        #expect(try ClusterCounter(client: client, keys: keys).recorded(vm: vm)
                == RecordedGeneration(generation: 7, token: zombie.token, member: "host-a"))
        // The next owner continues from the last visible generation; the zombie's 8 was
        // never recorded, so the next owner's 8 is the one that counts.
        try next.authorize(generation: 8)
        #expect(try ClusterCounter(client: client, keys: keys).recorded(vm: vm)?.token == next.token)
        zombie.release()
    }

    @Test("every member refuses a container copy older than the recorded generation")
    func olderCopyRefused() throws {
        let etcd = try EtcdCluster()
        let keys = try ClusterKeys(cluster: "test")
        let owner = try VMOwnership.acquire(client: try EtcdClient(endpoints: etcd.endpoints), keys: keys, vm: vm, member: "host-a", ttl: 5)
        defer { owner.release() }
        try owner.authorize(generation: 5)
        // Each member asks etcd through its own client, at a different endpoint first.
        for first in etcd.endpoints.indices {
            let endpoints = Array(etcd.endpoints[first...] + etcd.endpoints[..<first])
            let counter = ClusterCounter(client: try EtcdClient(endpoints: endpoints), keys: keys)
            let error = try #require(throws: ClusterError.self) { try counter.check(vm: vm, generation: 4, path: "vm1.state") }
            #expect(error.code == .clusterRollback)
            #expect(ErrorChain.category(of: error) == .rollback)
            #expect(try counter.check(vm: vm, generation: 5, path: "vm1.state") == .current)
            #expect(try counter.check(vm: vm, generation: 6, path: "vm1.state") == .ahead(visible: 5))
        }
        // An owner cannot record a generation that is not after the recorded one.
        #expect(throws: ClusterError.self) { try owner.authorize(generation: 5) }
    }

    @Test("one etcd member down changes nothing; two down stop commits; their return resumes them")
    func quorumLossStopsCommits() throws {
        let etcd = try EtcdCluster()
        let client = try EtcdClient(endpoints: etcd.endpoints, requestTimeout: .seconds(1))
        let keys = try ClusterKeys(cluster: "test")
        let lost = Mutex<ClusterError?>(nil)
        // A long lease, so the outage below stays inside it.
        let owner = try VMOwnership.acquire(client: client, keys: keys, vm: vm, member: "host-a", ttl: 30,
                                            onLost: { error in lost.withLock { $0 = error } })
        defer { owner.release() }
        try owner.authorize(generation: 1)

        etcd.kill(0)
        try owner.authorize(generation: 2)
        #expect(try client.get(keys.generation(vm: vm)) != nil)

        etcd.kill(1)
        let stopped = try #require(throws: ClusterError.self) { try owner.authorize(generation: 3) }
        #expect(stopped.code == .clusterUnavailable)

        try etcd.start(0)
        try etcd.start(1)
        #expect(waitUntil(attempts: 200, interval: 50_000) { etcd.isHealthy() })
        try owner.authorize(generation: 4)
        #expect(try ClusterCounter(client: client, keys: keys).recorded(vm: vm)?.generation == 4)
        #expect(lost.withLock { $0 } == nil)
        #expect(owner.isOwner)
    }

    @Test("an owner that cannot renew its lease gives the VM up before the lease can end")
    func failStopWithoutQuorum() throws {
        let etcd = try EtcdCluster()
        let client = try EtcdClient(endpoints: etcd.endpoints, requestTimeout: .milliseconds(500))
        let keys = try ClusterKeys(cluster: "test")
        let lost = Mutex<ClusterError?>(nil)
        let owner = try VMOwnership.acquire(client: client, keys: keys, vm: vm, member: "host-a", ttl: 3,
                                            onLost: { error in lost.withLock { $0 = error } })
        defer { owner.release() }
        etcd.kill(1)
        etcd.kill(2)
        #expect(waitUntil(attempts: 200, interval: 50_000) { lost.withLock { $0 } != nil })
        #expect(lost.withLock { $0 }?.code == .clusterFenced)
        #expect(!owner.isOwner)
        let error = try #require(throws: ClusterError.self) { try owner.authorize(generation: 1) }
        #expect(error.code == .clusterFenced)
    }
}
