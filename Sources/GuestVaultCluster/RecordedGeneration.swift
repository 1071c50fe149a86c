import Foundation
import GuestVaultCore

/// What etcd records for a VM at each visible commit: the container generation that is
/// visible, the fencing token of the owner that made it visible (the etcd revision at
/// which that owner took the VM), that owner's name, and where the visible generation
/// is: the owner's container file (a name in the shared directory) and the end of that
/// generation's commit in it (`logEnd`: the bytes [0, logEnd) are the container at this
/// generation; whatever follows was never made visible). Stored as JSON.
public struct RecordedGeneration: Sendable, Equatable, Codable {
    public var generation: UInt64
    public var token: Int64
    public var member: String
    public var file: String?
    public var logEnd: Int64?

    public init(generation: UInt64, token: Int64, member: String, file: String? = nil, logEnd: Int64? = nil) {
        self.generation = generation
        self.token = token
        self.member = member
        self.file = file
        self.logEnd = logEnd
    }

    func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return Array(try encoder.encode(self))
    }

    static func decode(_ bytes: [UInt8], vm: String) throws -> RecordedGeneration {
        guard bytes.count <= 4096, let record = try? JSONDecoder().decode(RecordedGeneration.self, from: Data(bytes)),
              record.generation > 0, record.token > 0, ClusterKeys.isValidName(record.member),
              record.file.map(ClusterKeys.isValidName) ?? true, (record.logEnd ?? 0) >= 0, (record.file == nil) == (record.logEnd == nil) else {
            throw ClusterError(.clusterProtocol, "etcd's generation record of VM \(vm) is malformed (\(bytes.count) bytes)")
        }
        return record
    }
}

/// The cluster-wide rollback counter of VMs, read by every member: a container copy
/// older than the generation etcd recorded is refused wherever it is opened.
public struct ClusterCounter: Sendable {
    public let client: EtcdClient
    public let keys: ClusterKeys

    public init(client: EtcdClient, keys: ClusterKeys) {
        self.client = client
        self.keys = keys
    }

    /// The generation etcd recorded for `vm`, nil when none was ever recorded.
    public func recorded(vm: String) throws -> RecordedGeneration? {
        guard let value = try client.get(keys.generation(vm: vm)) else { return nil }
        return try RecordedGeneration.decode(value.value, vm: vm)
    }

    /// What a member may do with a container of `vm` at `generation`.
    public enum Verdict: Sendable, Equatable {
        /// The container is at the visible generation (or etcd has none yet).
        case current
        /// The container holds commits after the visible generation that were never made
        /// visible (a zombie's or an interrupted commit): open it at `visible`.
        case ahead(visible: UInt64)
    }

    /// Refuses a container copy older than what etcd recorded (`clusterRollback`).
    @discardableResult
    public func check(vm: String, generation: UInt64, path: String) throws -> Verdict {
        guard let record = try recorded(vm: vm) else { return .current }
        if generation < record.generation {
            throw ClusterError(.clusterRollback,
                               "\(path): generation \(generation) is older than generation \(record.generation), which the cluster recorded for VM \(vm) (made visible by member \(record.member)): an older copy was put back; restore the newest copy")
        }
        return generation == record.generation ? .current : .ahead(visible: record.generation)
    }
}
