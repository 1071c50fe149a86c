public import GuestVaultCore

extension ErrorCode {
    /// No etcd endpoint answered within the time allowed, or etcd has no quorum.
    public static let clusterUnavailable = ErrorCode("clusterUnavailable", .timeout)
    /// etcd answered with an error or with a reply this client cannot read.
    public static let clusterProtocol = ErrorCode("clusterProtocol", .peer)
    /// Another member owns the VM (its lease is alive).
    public static let clusterOwnedElsewhere = ErrorCode("clusterOwnedElsewhere", .locked)
    /// This member's ownership of the VM is gone (lease expired or taken over): fenced.
    public static let clusterFenced = ErrorCode("clusterFenced", .locked)
    /// A container generation is older than the one etcd recorded for the VM.
    public static let clusterRollback = ErrorCode("clusterRollback", .rollback)
    /// The cluster configuration is missing or wrong.
    public static let clusterConfiguration = ErrorCode("clusterConfiguration", .usage)
    /// Something the cluster needs was not found (member, VM record).
    public static let clusterNotFound = ErrorCode("clusterNotFound", .notFound)
}

/// The one error type of the cluster module: what failed, on which VM, member or
/// endpoint, and what to do. Never carries key material.
public enum ClusterErrorDomain {}
public typealias ClusterError = DomainError<ClusterErrorDomain>
