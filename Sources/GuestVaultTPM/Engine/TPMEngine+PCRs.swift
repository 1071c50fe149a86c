public import GuestVaultCore
import Synchronization

extension ErrorCode {
    /// A host-side read before the VM's firmware started the TPM (TPM2_Startup).
    public static let tpmNotStarted = ErrorCode("tpmNotStarted", .usage)
}

/// Host-side reads of a running TPM's PCRs (docs/TRUSTED-LAUNCH.md).
///
/// The engine is in-process and every command goes through ``TPMEngine/execute(_:locality:)``
/// under the engine's lock, so a TPM2_PCR_Read from the host runs between two of the
/// guest's commands, never inside one. TPM2_PCR_Read needs no handle, no session and no
/// authorization, and changes nothing the guest can observe: it neither loads an object
/// nor touches NV, and it is not command-audited unless the guest asked for it.
extension TPMEngine {
    /// The live engine of this process, held weakly: registered by ``start(storage:deleteVolatile:)``
    /// and cleared by ``stop(storeVolatile:)``.
    private struct WeakEngine { weak var engine: TPMEngine? }
    private static let registered = Mutex(WeakEngine())

    static func register(_ engine: TPMEngine?) { registered.withLock { $0.engine = engine } }

    /// The running engine of this process, if one is running.
    public static func current() -> TPMEngine? {
        registered.withLock { $0.engine }.flatMap { $0.isRunning ? $0 : nil }
    }

    /// The PCRs of the SHA-256 bank.
    public static let pcrCount = 24

    /// Reads SHA-256 PCRs `indices` (0-23) with as many TPM2_PCR_Read commands as the TPM
    /// needs (it returns at most eight digests a call). Throws ``TPMEngineError`` with code
    /// `tpmNotStarted` before the guest's firmware sent TPM2_Startup.
    public func pcrValues(_ indices: Set<Int>) throws -> [Int: [UInt8]] {
        guard indices.allSatisfy({ (0..<Self.pcrCount).contains($0) }) else {
            throw TPMEngineError(.malformed, "PCR indices are 0 to \(Self.pcrCount - 1), not \(indices.sorted())")
        }
        var wanted = indices
        var values: [Int: [UInt8]] = [:]
        while !wanted.isEmpty {
            var select: [UInt8] = [0, 0, 0]
            for index in wanted { select[index / 8] |= 1 << UInt8(index % 8) }
            var w = ByteWriter()
            w.u32(1)
            w.u16(TPMConstant.algSHA256)
            w.u8(3)
            w.raw(select)
            let response = try TPMResponse(execute(TPMCommand(code: TPMConstant.ccPCRRead, parameters: w.bytes).bytes))
            if response.code == TPMConstant.rcInitialize {
                throw TPMEngineError(.tpmNotStarted, "the TPM has not been started yet (the VM's firmware has not sent TPM2_Startup)",
                                     responseCode: response.code)
            }
            try response.check("TPM2_PCR_Read")
            var r = try response.parameters()
            _ = try r.u32("pcrUpdateCounter")
            let selections = try r.u32("pcrSelectionOut count")
            guard selections <= 1 else { throw TPMEngineError(.malformed, "TPM2_PCR_Read returned \(selections) banks for one asked") }
            var read: [Int] = []
            if selections == 1 {
                guard try r.u16("hash") == TPMConstant.algSHA256 else { throw TPMEngineError(.malformed, "TPM2_PCR_Read returned another bank than SHA-256") }
                let size = Int(try r.u8("sizeofSelect"))
                let bitmap = try r.take(count: size, "pcrSelect")
                for (byte, bits) in bitmap.enumerated() {
                    for bit in 0..<8 where bits & (1 << UInt8(bit)) != 0 { read.append(byte * 8 + bit) }
                }
            }
            let count = Int(try r.u32("digest count"))
            guard count == read.count, !read.isEmpty, Set(read).isSubset(of: wanted) else {
                throw TPMEngineError(.malformed, "PCRs \(wanted.sorted()) of the SHA-256 bank are not allocated (the TPM returned \(read.sorted()))")
            }
            for index in read {
                let digest = try r.sized("digest")
                guard digest.count == 32 else { throw TPMEngineError(.malformed, "PCR \(index) digest is \(digest.count) bytes, not 32") }
                values[index] = digest
                wanted.remove(index)
            }
        }
        return values
    }
}
