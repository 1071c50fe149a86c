import GuestVaultCore

/// Where the engine's state lives. libtpms asks for and hands over whole blobs by
/// name; every store must be durable before it returns, because the TPM's response to
/// the guest follows it.
public protocol TPMStateStorage: AnyObject, Sendable {
    func load(_ blob: TPMStateBlob) throws -> [UInt8]?
    func store(_ blob: TPMStateBlob, _ bytes: [UInt8]) throws
    func delete(_ blob: TPMStateBlob) throws
}

/// The three state blobs of a libtpms TPM 2.0, and the container entries they live in.
public enum TPMStateBlob: String, Sendable, CaseIterable {
    /// NV and persistent state ("permall"): every NV write changes it.
    case permanent
    /// The volatile state (PCRs, loaded objects, sessions), stored on request and on stop.
    case volatile
    /// The state saved by TPM2_Shutdown(STATE), for migration.
    case saveState

    /// The name libtpms uses in its NV callbacks.
    public var libtpmsName: String {
        switch self {
        case .permanent: "permall"
        case .volatile: "volatilestate"
        case .saveState: "savestate"
        }
    }

    public init?(libtpmsName: String) {
        guard let blob = Self.allCases.first(where: { $0.libtpmsName == libtpmsName }) else { return nil }
        self = blob
    }

}
