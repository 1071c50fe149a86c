import GuestVaultCore
/// Where the cluster keeps what its members agree on, under `/guestvault/<cluster>/`:
///
/// | key | value | lifetime |
/// |---|---|---|
/// | `members/<member>` | the member's record (``ClusterMember``) | until it leaves |
/// | `vms/<vm>/owner` | the owning member's name | attached to the owner's lease |
/// | `vms/<vm>/generation` | the last visible generation and its fencing token (``RecordedGeneration``) | permanent |
public struct ClusterKeys: Sendable, Equatable {
    public let cluster: String

    public init(cluster: String) throws {
        guard Self.isValidName(cluster) else {
            throw ClusterError(.clusterConfiguration,
                               "cluster name '\(cluster.prefix(80))' is not allowed: use 1-64 letters, digits, '-', '_' or '.'")
        }
        self.cluster = cluster
    }

    public var root: String { "/guestvault/\(cluster)/" }
    public var members: String { root + "members/" }
    public func member(_ name: String) -> String { members + name }
    public func owner(vm: String) -> String { root + "vms/\(vm)/owner" }
    public func generation(vm: String) -> String { root + "vms/\(vm)/generation" }

    /// Names of clusters and members: short, printable, no '/'.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64 && name != "." && name != ".."
            && name.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A)
                || $0 == 0x2D || $0 == 0x5F || $0 == 0x2E }
    }
}
