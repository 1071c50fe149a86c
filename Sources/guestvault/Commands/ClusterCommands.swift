import ArgumentParser
import Foundation
import GuestVaultCluster
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultTPM
import GuestVaultVM

/// `guestvault cluster init|join|leave|status|check`: a vault's membership in a cluster
/// of hosts that agree on VM ownership and generations through etcd (docs/CLUSTER.md).
struct ClusterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Join a vault to a cluster of hosts that agree on VM ownership and generations through etcd.",
        discussion: """
            Hosts in a cluster share containers (a shared directory: NFS, CephFS) and agree
            through etcd on which host owns each VM (a lease with a fencing token) and on
            the last visible generation of each VM's container (a cluster-wide rollback
            counter). The configuration is kept in the vault as cluster.json (0600).
            Each member registers its vault's recipient key; containers get a key
            protector slot per member, so any member can open a VM it takes over.

            Examples:
              guestvault cluster init --vault DIR --cluster prod --member host-a \\
                  --endpoints http://10.0.0.1:2379,http://10.0.0.2:2379,http://10.0.0.3:2379
              guestvault cluster join --vault DIR --cluster prod --member host-b --endpoints …
              guestvault cluster status --vault DIR --json
              guestvault cluster check --vault DIR /shared/vm1.state
              guestvault cluster leave --vault DIR
            """,
        subcommands: [Init.self, Join.self, Leave.self, Status.self, Check.self]
    )

    struct MembershipOptions: ParsableArguments {
        @Option(help: ArgumentHelp("The cluster's name (letters, digits, '-', '_', '.').", valueName: "name"))
        var cluster: String

        @Option(help: ArgumentHelp("This host's member name (default: the host name).", valueName: "name"))
        var member: String?

        @Option(help: ArgumentHelp("etcd client URLs, comma-separated.", valueName: "urls"))
        var endpoints: String

        @Option(name: .customLong("etcd-ca"), help: ArgumentHelp("PEM file of the CA of etcd's TLS certificates (https endpoints).", valueName: "file"))
        var etcdCA: String?

        @Option(name: .customLong("etcd-cert"), help: ArgumentHelp("PEM client certificate for etcd (with --etcd-key).", valueName: "file"))
        var etcdCert: String?

        @Option(name: .customLong("etcd-key"), help: ArgumentHelp("PEM client key for etcd (with --etcd-cert), mode 0600.", valueName: "file"))
        var etcdKey: String?

        @Option(help: ArgumentHelp("Seconds a VM's ownership lease lasts without renewal (2-3600): about the failover time.", valueName: "s"))
        var leaseTTL: Int64 = 10

        func configuration() throws -> ClusterConfiguration {
            guard (etcdCert == nil) == (etcdKey == nil) else { throw ValidationError("--etcd-cert and --etcd-key go together") }
            if etcdCert != nil, etcdCA == nil { throw ValidationError("--etcd-cert needs --etcd-ca") }
            let tls = etcdCA.map { EtcdClient.TLS(caFile: $0, certFile: etcdCert, keyFile: etcdKey) }
            let name = member ?? ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
            return try ClusterConfiguration(cluster: cluster, member: name,
                                            endpoints: endpoints.split(separator: ",").map { String($0.trimmingCharacters(in: .whitespaces)) },
                                            tls: tls, leaseTTL: leaseTTL)
        }
    }

    static func register(vault options: VaultOptions, membership: MembershipOptions, creating: Bool, json: Bool) throws {
        let vault = try options.open()
        let path = try options.resolvedPath()
        if let existing = try ClusterConfiguration.load(vault: path) {
            throw ClusterError(ErrorCode("clusterAlreadyMember", .alreadyExists),
                               "vault \(path) is member '\(existing.member)' of cluster \(existing.cluster) already: 'guestvault cluster leave' first")
        }
        let configuration = try membership.configuration()
        let client = try configuration.makeClient()
        let member = ClusterMember(name: configuration.member, recipient: hexString(try vault.recipientKey().publicKey.rawRepresentation))
        try ClusterMembership(client: client, keys: try configuration.keys).add(member, creating: creating)
        try configuration.save(vault: path)
        if json {
            try printJSON(configuration)
        } else {
            print("\(creating ? "Created" : "Joined") cluster \(configuration.cluster) as member \(configuration.member)")
            print("  etcd       \(configuration.endpoints.joined(separator: ", "))")
            print("  lease TTL  \(configuration.leaseTTL) s")
        }
    }

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a cluster in etcd with this vault as its first member.")
        @OptionGroup var vault: VaultOptions
        @OptionGroup var membership: MembershipOptions
        @Flag(help: "Print the configuration as JSON.") var json = false
        func run() throws { try ClusterCommand.register(vault: vault, membership: membership, creating: true, json: json) }
    }

    struct Join: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Join this vault to an existing cluster.")
        @OptionGroup var vault: VaultOptions
        @OptionGroup var membership: MembershipOptions
        @Flag(help: "Print the configuration as JSON.") var json = false
        func run() throws { try ClusterCommand.register(vault: vault, membership: membership, creating: false, json: json) }
    }

    struct Leave: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove this vault from its cluster (its container slots go at the next slot sync).")
        @OptionGroup var vault: VaultOptions
        func run() throws {
            let path = try vault.resolvedPath()
            guard let configuration = try ClusterConfiguration.load(vault: path) else {
                throw ClusterError(.clusterNotFound, "vault \(path) is in no cluster")
            }
            try ClusterMembership(client: try configuration.makeClient(), keys: try configuration.keys).remove(configuration.member)
            try FileManager.default.removeItem(atPath: ClusterConfiguration.path(inVault: path))
            print("Member \(configuration.member) left cluster \(configuration.cluster)")
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the cluster's members and which etcd endpoints answer.")
        @OptionGroup var vault: VaultOptions
        @Flag(help: "Print the status as JSON.") var json = false

        struct Report: Encodable {
            var cluster: String
            var member: String
            var leaseTTL: Int64
            var endpoints: [Endpoint]
            var members: [ClusterMember]
            struct Endpoint: Encodable { var url: String; var healthy: Bool }
        }

        func run() throws {
            let path = try vault.resolvedPath()
            guard let configuration = try ClusterConfiguration.load(vault: path) else {
                throw ClusterError(.clusterNotFound, "vault \(path) is in no cluster: 'guestvault cluster init' or 'join'")
            }
            let client = try configuration.makeClient()
            let endpoints = configuration.endpoints.map { url in
                Report.Endpoint(url: url, healthy: (try? client.memberStatus(endpoint: url)) != nil)
            }
            let members = try ClusterMembership(client: client, keys: try configuration.keys).members()
            let report = Report(cluster: configuration.cluster, member: configuration.member, leaseTTL: configuration.leaseTTL,
                                endpoints: endpoints, members: members)
            if json { try printJSON(report); return }
            print("Cluster \(report.cluster), this vault is member \(report.member) (lease TTL \(report.leaseTTL) s)")
            for endpoint in endpoints { print("  etcd    \(endpoint.url)  \(endpoint.healthy ? "answers" : "DOWN")") }
            for member in members { print("  member  \(member.name)  \(member.recipient)") }
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Refuse a container older than the generation the cluster recorded for its VM (exit 9).")
        @OptionGroup var vault: VaultOptions
        @Argument(help: ArgumentHelp("The container file.", valueName: "container")) var container: String
        @Flag(help: "Print the result as JSON.") var json = false

        struct Report: Encodable { var vm: String; var generation: UInt64; var recorded: UInt64?; var verdict: String }

        func run() throws {
            let path = try vault.resolvedPath()
            guard let configuration = try ClusterConfiguration.load(vault: path) else {
                throw ClusterError(.clusterNotFound, "vault \(path) is in no cluster")
            }
            let file = try GuestStateContainer.open(at: container)
            let vm = file.vm.uuidString.lowercased()
            let counter = ClusterCounter(client: try configuration.makeClient(), keys: try configuration.keys)
            let verdict = try counter.check(vm: vm, generation: file.generation, path: container)
            let recorded = try counter.recorded(vm: vm)?.generation
            let text: String = switch verdict {
            case .current: "current"
            case .ahead(let visible): "ahead: generations after \(visible) were never made visible"
            }
            if json {
                try printJSON(Report(vm: vm, generation: file.generation, recorded: recorded, verdict: text))
            } else {
                print("\(container): VM \(vm) generation \(file.generation), cluster recorded \(recorded.map(String.init) ?? "none"): \(text)")
            }
        }
    }
}

extension ClusterCommand {
    /// `serve`'s cluster hook: when the vault is a cluster member, takes the VM's lease
    /// (waiting up to `wait` seconds for another member's lease to end), copies the
    /// visible generation into this owner's file and returns the session whose storage
    /// the TPM server uses; nil when the vault is in no cluster.
    static func serveSession(state: String, vault: VaultSelection, wait: Int?, incomingMigration: Bool,
                             onLost: @escaping @Sendable (String) -> Void) throws -> (any ServeClusterSession)? {
        let path = try vault.resolvedPath()
        guard let configuration = try ClusterConfiguration.load(vault: path) else {
            if wait != nil { throw ValidationError("--cluster-wait: vault \(path) is in no cluster") }
            return nil
        }
        if incomingMigration {
            throw ClusterError(ErrorCode("clusterUnsupported", .unsupported),
                               "live migration into a cluster member is not supported yet: the member that takes the VM's lease starts it from the shared container (docs/CLUSTER.md)")
        }
        return try ClusterServeAdapter(ClusterServeSession(sharedPath: state, vault: vault.open(), vaultPath: path, configuration: configuration,
                                       wait: wait.map { .seconds($0) }, onLost: { onLost($0.message) }))
    }
}

/// `serve`'s view of a cluster session (GuestVaultVM carries no cluster client).
final class ClusterServeAdapter: ServeClusterSession {
    let session: ClusterServeSession

    init(_ session: ClusterServeSession) { self.session = session }

    var vmLabel: String { "\(session.ownership.vm)" }
    var tpmStorage: any TPMStateStorage { session.storage }
    var stopError: (any Error)? { session.storage.stopReason }
    func release() { session.release() }
}
