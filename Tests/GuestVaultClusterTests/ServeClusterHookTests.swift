import GuestVaultCluster
import GuestVaultVM
import Testing

/// `guestvault-vm` has no cluster client; it recognises a cluster member's vault by the
/// membership file GuestVaultCluster writes and refuses to serve its VMs.
@Suite("serve's cluster hook")
struct ServeClusterHookTests {
    @Test func theLeanExecutableLooksForTheFileTheClusterWrites() {
        #expect(ServeCluster.membershipFileName == ClusterConfiguration.fileName)
    }
}
