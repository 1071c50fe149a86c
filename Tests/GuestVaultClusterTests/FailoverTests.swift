import Foundation
import Glibc
import GuestVaultCluster
import GuestVaultTestSupport
import Testing

/// Three "hosts" (processes with their own vaults, joined to one cluster) serve one VM's
/// vTPM from a shared directory, agreeing through a real 3-member etcd cluster.
@Suite("Cluster failover", .serialized,
       .enabled(if: EtcdCluster.isAvailable && tool("tpm2_nvwrite") != nil, "needs etcd-server and tpm2-tools (scripts/deps.sh --tests)"))
struct FailoverTests {
    static let vm = "0c6d7a52-86a8-4b7e-9a43-31f1e8f2d6a1"
    static let index = "0x1500016"
    static let ttl = 3

    struct Cluster {
        let etcd: EtcdCluster
        let directory: TemporaryDirectory
        let shared: String
        let hosts: [ClusterHost]
    }

    /// etcd, three vaults joined as host-a/b/c, and the VM's container (with EKs) in the
    /// shared directory.
    func makeCluster() throws -> Cluster {
        let etcd = try EtcdCluster()
        let directory = TemporaryDirectory("gv-cluster")
        try FileManager.default.createDirectory(atPath: directory.file("shared"), withIntermediateDirectories: false,
                                                attributes: [.posixPermissions: 0o700])
        let shared = directory.file("shared/vm1.state")
        let hosts = ["a", "b", "c"].map { ClusterHost(name: "host-\($0)", directory: directory.path) }
        for (index, host) in hosts.enumerated() {
            try expectSuccess(try guestvault(["vault", "init", "--vault", host.vault]), "vault init")
            try expectSuccess(try guestvault(["cluster", index == 0 ? "init" : "join", "--vault", host.vault, "--cluster", "test",
                                              "--member", host.name, "--endpoints", etcd.endpoints.joined(separator: ","),
                                              "--lease-ttl", "\(Self.ttl)"]), "cluster join")
        }
        try expectSuccess(try guestvault(["create", "--vault", hosts[0].vault, "--vm", Self.vm, "--tpm", "--ek", shared]), "create")
        return Cluster(etcd: etcd, directory: directory, shared: shared, hosts: hosts)
    }

    func expectSuccess(_ result: (status: Int32, stdout: Data, stderr: String), _ what: String) throws {
        guard result.status == 0 else { throw Failure("\(what) failed (\(result.status)): \(result.stderr)") }
    }

    struct Failure: Error, CustomStringConvertible { let description: String; init(_ text: String) { description = text } }

    func nvWrite(_ host: ClusterHost, _ data: [UInt8], define: Bool) throws -> Int32 {
        if define {
            let defined = try runProgram(tool("tpm2_nvdefine")!, [Self.index, "-C", "o", "-s", "\(data.count)", "-a", "ownerread|ownerwrite"],
                                         environment: host.tcti)
            guard defined.status == 0 else { return defined.status }
        }
        return try runProgram(tool("tpm2_nvwrite")!, [Self.index, "-C", "o", "-i", "-"], environment: host.tcti, input: Data(data)).status
    }

    func nvRead(_ host: ClusterHost, count: Int) throws -> [UInt8]? {
        let result = try runProgram(tool("tpm2_nvread")!, [Self.index, "-C", "o", "-s", "\(count)"], environment: host.tcti)
        return result.status == 0 ? Array(result.stdout) : nil
    }

    func ekPublic(_ host: ClusterHost) throws -> Data {
        let result = try runProgram(tool("tpm2_readpublic")!, ["-c", "0x81010001"], environment: host.tcti)
        guard result.status == 0 else { throw Failure("tpm2_readpublic failed: \(result.stderr)") }
        return result.stdout
    }

    @Test("kill -9 the owner: the vTPM comes back on another host with the same NV contents and EK; a paused owner resumed after failover cannot write")
    func killAndPauseOwner() throws {
        let cluster = try makeCluster()
        let (a, b, c) = (cluster.hosts[0], cluster.hosts[1], cluster.hosts[2])

        #expect(try a.startServe(cluster.shared, wait: 0), "\(a.log)")
        let first = Array("written on host-a".utf8)
        #expect(try nvWrite(a, first, define: true) == 0)
        let ek = try ekPublic(a)

        // A second host cannot serve the VM while host-a owns it.
        #expect(try !b.startServe(cluster.shared, wait: 0))
        #expect(b.log.contains("owned by member 'host-a'"))
        b.killServe()

        // kill -9 host-a; host-b takes the VM once host-a's lease ends.
        let killed = ContinuousClock.now
        a.killServe()
        #expect(try b.startServe(cluster.shared, wait: 30), "\(b.log)")
        #expect(try nvRead(b, count: first.count) == first)
        let failover = ContinuousClock.now - killed
        print("cluster failover: kill -9 to the vTPM answering on host-b: \(failover) (lease TTL \(Self.ttl) s)")
        #expect(try ekPublic(b) == ek)

        // SIGSTOP host-b past its lease; host-c takes over; SIGCONT host-b: its next NV
        // write is refused and never seen.
        b.signal(SIGSTOP)
        #expect(try c.startServe(cluster.shared, wait: 30), "\(c.log)")
        #expect(try nvRead(c, count: first.count) == first)
        b.signal(SIGCONT)
        let zombie = Array("zombie on host-b!".utf8)
        #expect(try nvWrite(b, zombie, define: false) != 0)
        #expect(try nvRead(c, count: first.count) == first)
        let second = Array("written on host-c".utf8)
        #expect(try nvWrite(c, second, define: false) == 0)
        #expect(try nvRead(c, count: second.count) == second)
        b.killServe()
        c.killServe()
    }

    @Test("an older container file put back on shared storage is refused by every host")
    func olderCopyRefusedEverywhere() throws {
        let cluster = try makeCluster()
        let (a, b) = (cluster.hosts[0], cluster.hosts[1])
        #expect(try a.startServe(cluster.shared, wait: 0), "\(a.log)")
        #expect(try nvWrite(a, Array("generation one".utf8), define: true) == 0)
        let ownerFile = try #require(try FileManager.default.contentsOfDirectory(atPath: cluster.directory.file("shared"))
            .first { $0.hasPrefix("vm1.state.owner-") && !$0.hasSuffix(".lock") })
        let path = cluster.directory.file("shared/\(ownerFile)")
        let older = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(try nvWrite(a, Array("generation two".utf8), define: false) == 0)
        a.killServe()

        // The older copy goes back in place of the newest.
        try older.write(to: URL(fileURLWithPath: path))
        for host in cluster.hosts {
            let result = try guestvault(["cluster", "check", "--vault", host.vault, path])
            #expect(result.status != 0, "\(host.name): \(result.stderr)")
            #expect(result.stderr.contains("older"))
        }
        #expect(try !b.startServe(cluster.shared, wait: 30))
        #expect(b.log.contains("older"), "\(b.log)")
    }

    @Test("cluster status lists every member and endpoint; a second init and a taken member name are refused; leave removes the member")
    func membershipVerbs() throws {
        let cluster = try makeCluster()
        let (a, b) = (cluster.hosts[0], cluster.hosts[1])
        let status = try guestvault(["cluster", "status", "--vault", a.vault, "--json"])
        #expect(status.status == 0, "\(status.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: status.stdout) as? [String: Any])
        let members = try #require(report["members"] as? [[String: Any]])
        #expect(members.compactMap { $0["name"] as? String } == ["host-a", "host-b", "host-c"])
        let endpoints = try #require(report["endpoints"] as? [[String: Any]])
        #expect(endpoints.count == 3 && endpoints.allSatisfy { $0["healthy"] as? Bool == true })

        // Another vault cannot create the same cluster again, nor join under a taken name.
        let other = ClusterHost(name: "host-d", directory: cluster.directory.path)
        try expectSuccess(try guestvault(["vault", "init", "--vault", other.vault]), "vault init")
        let endpointList = cluster.etcd.endpoints.joined(separator: ",")
        let again = try guestvault(["cluster", "init", "--vault", other.vault, "--cluster", "test", "--member", "host-d", "--endpoints", endpointList])
        #expect(again.status != 0 && again.stderr.contains("exists already"), "\(again.stderr)")
        let taken = try guestvault(["cluster", "join", "--vault", other.vault, "--cluster", "test", "--member", "host-a", "--endpoints", endpointList])
        #expect(taken.status != 0 && taken.stderr.contains("another vault"), "\(taken.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(other.vault)/cluster.json"))

        #expect(try guestvault(["cluster", "leave", "--vault", b.vault]).status == 0)
        let after = try guestvault(["cluster", "status", "--vault", a.vault])
        #expect(after.status == 0 && !String(decoding: after.stdout, as: UTF8.self).contains("host-b"))
        #expect(!FileManager.default.fileExists(atPath: "\(b.vault)/cluster.json"))
        #expect(try guestvault(["cluster", "status", "--vault", b.vault]).status != 0)
    }
}
