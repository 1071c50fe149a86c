import Foundation
import GuestVaultCore
import GuestVaultState
import GuestVaultSystem

/// Where a VM's container lives in the cluster. Containers sit in a directory every
/// member sees (NFS, CephFS; a shared directory in tests). Each owner writes only a file
/// of its own, `<name>.owner-<token>` beside the VM's shared path `<name>`: when a member
/// takes a VM over, it copies the visible generation — exactly the bytes [0, logEnd) of
/// the file etcd names — into its own file and writes only there. A zombie owner keeps
/// appending to its old file, which no member reads again; an interrupted commit after
/// `logEnd` is left behind with it.
public enum ClusterTakeover {
    /// This owner's file name for the VM whose shared path has the file name `base`.
    public static func ownerFileName(base: String, token: Int64) -> String { "\(base).owner-\(token)" }

    /// Copies the VM's visible generation into this owner's own file and returns its path.
    /// Refuses (`clusterRollback`) a source older than what etcd recorded, and
    /// (`integrity`) a source that is not the recorded generation at the recorded length.
    public static func prepare(sharedPath: String, ownership: VMOwnership) throws -> String {
        let directory = FileSystem.parentDirectory(of: sharedPath)
        let base = (sharedPath as NSString).lastPathComponent
        let record = ownership.recordedAtAcquire
        let source = record?.file.map { FileSystem.join(directory, $0) } ?? sharedPath
        let target = FileSystem.join(directory, ownerFileName(base: base, token: ownership.token))

        // The length to copy: the recorded end of the visible commit, or (first owner)
        // the end of the shared file's last commit.
        let length: Int64
        if let logEnd = record?.logEnd {
            length = logEnd
        } else {
            length = try GuestStateContainer.open(at: source).logEnd
        }
        let input = try SafeOpen.existing(source, mode: .readOnly)
        let size = try input.size()
        guard length > 0, length <= size else {
            throw ClusterError(ErrorCode("clusterContainerChanged", .integrity),
                               "\(source) has \(size) bytes, but the generation the cluster recorded for VM \(ownership.vm) ends at byte \(length): the file was truncated or replaced; restore the newest copy")
        }
        let staged = try StagedFile(beside: target)
        var offset: Int64 = 0
        while offset < length {
            let count = Int(min(Int64(1 << 20), length - offset))
            let chunk = try input.read(at: offset, count: count)
            guard chunk.count == count else {
                throw ClusterError(ErrorCode("clusterContainerChanged", .integrity), "\(source) ended while it was copied")
            }
            try staged.write(chunk, at: offset)
            offset += Int64(count)
        }
        try staged.publish(.creatingNew)

        let copy = try GuestStateContainer.open(at: target)
        let vm = copy.vm.uuidString.lowercased()
        guard vm == ownership.vm else {
            try? FileSystem.removeFile(target)
            throw ClusterError(ErrorCode("clusterWrongVM", .integrity), "\(source) holds VM \(vm), not VM \(ownership.vm)")
        }
        if let record, copy.generation != record.generation {
            try? FileSystem.removeFile(target)
            if copy.generation < record.generation {
                throw ClusterError(.clusterRollback,
                                   "\(source): generation \(copy.generation) is older than generation \(record.generation), which the cluster recorded for VM \(vm): an older copy was put back; restore the newest copy")
            }
            throw ClusterError(ErrorCode("clusterContainerChanged", .integrity),
                               "\(source): the bytes the cluster recorded hold generation \(copy.generation), not \(record.generation): the file was replaced")
        }
        return target
    }
}
