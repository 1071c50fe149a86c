import Foundation
import GuestVaultCore
import GuestVaultSystem

/// A vault's cluster membership, kept in the vault directory as `cluster.json` (0600):
/// the cluster's name, this member's name, the etcd endpoints and TLS files, and the
/// lease TTL. No secret is in it: TLS keys stay in their own files, named here.
public struct ClusterConfiguration: Sendable, Equatable, Codable {
    public static let fileName = "cluster.json"

    public var cluster: String
    public var member: String
    public var endpoints: [String]
    public var tls: EtcdClient.TLS?
    /// Seconds a VM's lease lasts without renewal: the failover time is about this.
    public var leaseTTL: Int64

    public init(cluster: String, member: String, endpoints: [String], tls: EtcdClient.TLS? = nil, leaseTTL: Int64 = 10) throws {
        self.cluster = cluster
        self.member = member
        self.endpoints = endpoints
        self.tls = tls
        self.leaseTTL = leaseTTL
        try validate()
    }

    func validate() throws {
        _ = try ClusterKeys(cluster: cluster)
        guard ClusterKeys.isValidName(member) else {
            throw ClusterError(.clusterConfiguration, "member name '\(member.prefix(80))' is not allowed: use 1-64 letters, digits, '-', '_' or '.'")
        }
        guard !endpoints.isEmpty, endpoints.count <= 16 else {
            throw ClusterError(.clusterConfiguration, "give 1-16 etcd endpoints (got \(endpoints.count))")
        }
        guard leaseTTL >= 2, leaseTTL <= 3600 else {
            throw ClusterError(.clusterConfiguration, "lease TTL \(leaseTTL) s is out of range (2-3600 s)")
        }
    }

    public var keys: ClusterKeys { get throws { try ClusterKeys(cluster: cluster) } }

    public func makeClient(requestTimeout: Duration = .seconds(2)) throws -> EtcdClient {
        try EtcdClient(endpoints: endpoints, tls: tls, requestTimeout: requestTimeout)
    }

    public static func path(inVault vault: String) -> String { FileSystem.join(vault, fileName) }

    /// The vault's cluster configuration, nil when the vault is in no cluster.
    public static func load(vault: String) throws -> ClusterConfiguration? {
        let path = path(inVault: vault)
        guard FileSystem.exists(path) else { return nil }
        let bytes = try FileSystem.readFile(path, limit: 64 << 10)
        let configuration: ClusterConfiguration
        do { configuration = try JSONDecoder().decode(ClusterConfiguration.self, from: Data(bytes)) } catch {
            throw ClusterError(.clusterConfiguration, "\(path) is not a valid cluster configuration", underlying: error)
        }
        try configuration.validate()
        return configuration
    }

    /// Writes the configuration into the vault durably (0600).
    public func save(vault: String) throws {
        try validate()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try DurableFile.write(Array(try encoder.encode(self)), to: Self.path(inVault: vault))
    }
}

/// A member's record in etcd: its name and its vault's recipient key (an X25519 public
/// key), to which every container of the cluster gets a key protector slot, so any
/// member can open a VM it takes over without a shared secret on disk.
public struct ClusterMember: Sendable, Equatable, Codable {
    public var name: String
    public var recipient: String

    public init(name: String, recipient: String) {
        self.name = name
        self.recipient = recipient
    }
}

/// Joining, leaving and listing the members of a cluster.
public struct ClusterMembership: Sendable {
    public let client: EtcdClient
    public let keys: ClusterKeys

    public init(client: EtcdClient, keys: ClusterKeys) {
        self.client = client
        self.keys = keys
    }

    public func members() throws -> [ClusterMember] {
        try client.list(prefix: keys.members).map { item in
            guard item.value.count <= 4096, let member = try? JSONDecoder().decode(ClusterMember.self, from: Data(item.value)),
                  ClusterKeys.isValidName(member.name), item.key == keys.member(member.name) else {
                throw ClusterError(.clusterProtocol, "etcd's member record \(item.key.prefix(200)) is malformed")
            }
            return member
        }
    }

    /// Adds `member`. `creating`: the cluster must have no member yet (init); otherwise
    /// it must have one (join). A name already taken by another key is refused.
    public func add(_ member: ClusterMember, creating: Bool) throws {
        guard ClusterKeys.isValidName(member.name) else {
            throw ClusterError(.clusterConfiguration, "member name '\(member.name.prefix(80))' is not allowed")
        }
        let existing = try members()
        if creating, !existing.isEmpty {
            throw ClusterError(ErrorCode("clusterExists", .alreadyExists),
                               "cluster \(keys.cluster) exists already (\(existing.count) members): use 'guestvault cluster join'")
        }
        if !creating, existing.isEmpty {
            throw ClusterError(.clusterNotFound, "cluster \(keys.cluster) has no member at these endpoints: use 'guestvault cluster init' first")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let result = try client.transaction(
            if: [EtcdCompare(keys.member(member.name), .createRevision(0))],
            then: [.put(keys.member(member.name), Array(try encoder.encode(member)))],
            else: [.get(keys.member(member.name))])
        if !result.succeeded {
            let same = (result.ranges.first ?? nil).flatMap { try? JSONDecoder().decode(ClusterMember.self, from: Data($0.value)) } == member
            if !same {
                throw ClusterError(ErrorCode("clusterMemberExists", .alreadyExists),
                                   "cluster \(keys.cluster) has a member named '\(member.name)' with another vault already")
            }
        }
    }

    /// Removes `name` from the cluster (its slots are dropped at the next slot sync).
    public func remove(_ name: String) throws {
        guard try client.delete(keys.member(name)) == 1 else {
            throw ClusterError(.clusterNotFound, "cluster \(keys.cluster) has no member named '\(name.prefix(64))'")
        }
    }
}
