import ArgumentParser
import FoundationEssentials
import Glibc
public import GuestVaultCore
import GuestVaultSystem
public import GuestVaultTPM
import Synchronization

extension ErrorCode {
    /// `guestvault-vm serve` was asked to serve a VM of a cluster member's vault.
    public static let clusterNeedsFullCLI = ErrorCode("clusterNeedsFullCLI", .unsupported)
}

/// What `serve` needs of a cluster session: the storage whose commits are visible only
/// while this member holds the VM's lease, and its end. The `guestvault` CLI gives
/// GuestVaultCluster's session (docs/CLUSTER.md); the lean per-VM executable
/// `guestvault-vm` carries no cluster client and refuses a cluster member's VM.
public protocol ServeClusterSession: AnyObject, Sendable {
    /// The VM's id as logged.
    var vmLabel: String { get }
    /// The storage the TPM server commits through.
    var tpmStorage: any TPMStateStorage { get }
    /// Why the session stopped the server (the lease was lost), if it did.
    var stopError: (any Error)? { get }
    /// Ends the lease.
    func release()
}

/// The hook by which an executable that links a cluster client gives `serve` its
/// sessions (installed once, before the command line is parsed).
public enum ServeCluster {
    /// Opens the cluster session for the container at `state`, or nil when the vault is
    /// in no cluster. `onLost` is called (on another thread) with the reason when the
    /// lease is lost.
    public typealias Opener = @Sendable (_ state: String, _ vault: VaultSelection, _ wait: Int?, _ incomingMigration: Bool,
                                         _ onLost: @escaping @Sendable (String) -> Void) throws -> (any ServeClusterSession)?

    /// A vault's cluster membership file (GuestVaultCluster's `ClusterConfiguration.fileName`;
    /// a test keeps the two equal).
    public static let membershipFileName = "cluster.json"

    private static let opener = Mutex<Opener?>(nil)

    public static func install(_ newOpener: @escaping Opener) {
        opener.withLock { $0 = newOpener }
    }

    static func session(state: String, vault: VaultSelection, wait: Int?, incomingMigration: Bool,
                        onLost: @escaping @Sendable (String) -> Void) throws -> (any ServeClusterSession)? {
        if let installed = opener.withLock({ $0 }) {
            return try installed(state, vault, wait, incomingMigration, onLost)
        }
        let path = try vault.resolvedPath()
        if FileSystem.exists(FileSystem.join(path, membershipFileName)) {
            throw CLIError(.clusterNeedsFullCLI,
                           "vault \(path) is a cluster member (\(membershipFileName)); this executable has no cluster client: serve the VM with `guestvault serve`, which takes the VM's lease")
        }
        if wait != nil { throw ValidationError("--cluster-wait: vault \(path) is in no cluster") }
        return nil
    }
}

/// Lets the lease-loss callback (on the keep-alive thread) stop a TPM server that is
/// made after the session. `TPMServer.requestStop` is an atomic store and a write(2),
/// safe from any thread; the lock guards only the reference.
final class ServerStopper: @unchecked Sendable {
    private let state = Mutex<Void>(())
    private var server: TPMServer?
    private var stopped = false

    func set(_ value: TPMServer) {
        let stopNow = state.withLock { _ in server = value; return stopped }
        if stopNow { value.requestStop() }
    }

    func stop() {
        let current = state.withLock { _ in stopped = true; return server }
        current?.requestStop()
    }
}
