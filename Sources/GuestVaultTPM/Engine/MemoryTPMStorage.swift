import Synchronization
import GuestVaultCore

/// TPM state in memory only (manufacture scratch, validation, benchmarks).
public final class MemoryTPMStorage: TPMStateStorage {
    private let blobs = Mutex<[TPMStateBlob: [UInt8]]>([:])

    public init(_ initial: [TPMStateBlob: [UInt8]] = [:]) {
        blobs.withLock { $0 = initial }
    }

    public func load(_ blob: TPMStateBlob) throws -> [UInt8]? { blobs.withLock { $0[blob] } }
    public func store(_ blob: TPMStateBlob, _ bytes: [UInt8]) throws { blobs.withLock { $0[blob] = bytes } }
    public func delete(_ blob: TPMStateBlob) throws { _ = blobs.withLock { $0.removeValue(forKey: blob) } }
    public var snapshot: [TPMStateBlob: [UInt8]] { blobs.withLock { $0 } }
}
