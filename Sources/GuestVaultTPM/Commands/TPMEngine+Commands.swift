import GuestVaultCore

/// Typed helpers for the TPM commands GuestVault's own tools and tests use. Each checks
/// the response code and throws ``TPMEngineError`` with it.
extension TPMEngine {
    @discardableResult
    func run(_ command: TPMCommand, _ name: String) throws -> TPMResponse {
        let response = try TPMResponse(execute(command.bytes))
        try response.check(name)
        return response
    }

    /// TPM2_Startup(CLEAR or STATE).
    public func startup(clear: Bool = true) throws {
        try run(.startup(clear ? TPMConstant.suClear : TPMConstant.suState), "TPM2_Startup")
    }

    /// TPM2_Shutdown(CLEAR or STATE).
    public func shutdown(clear: Bool = true) throws {
        try run(.shutdown(clear ? TPMConstant.suClear : TPMConstant.suState), "TPM2_Shutdown")
    }

    /// TPM2_GetRandom.
    public func getRandom(_ count: Int) throws -> [UInt8] {
        var r = try run(.getRandom(UInt16(min(count, 64))), "TPM2_GetRandom").parameters()
        return try r.sized("randomBytes")
    }

    /// TPM2_PCR_Extend of the SHA-256 bank.
    public func pcrExtend(_ index: Int, sha256 digest: [UInt8]) throws {
        var w = ByteWriter()
        w.u32(1)
        w.u16(TPMConstant.algSHA256)
        w.raw(digest)
        try run(TPMCommand(code: TPMConstant.ccPCRExtend, handles: [UInt32(index)], authorizations: 1, parameters: w.bytes), "TPM2_PCR_Extend")
    }

    /// TPM2_PCR_Read of SHA-256 PCR `index`.
    public func pcrRead(_ index: Int) throws -> [UInt8] {
        var w = ByteWriter()
        w.u32(1)
        w.u16(TPMConstant.algSHA256)
        w.u8(3)
        var select: [UInt8] = [0, 0, 0]
        select[index / 8] = 1 << UInt8(index % 8)
        w.raw(select)
        var r = try run(TPMCommand(code: TPMConstant.ccPCRRead, parameters: w.bytes), "TPM2_PCR_Read").parameters()
        _ = try r.u32("pcrUpdateCounter")
        let selections = try r.u32("pcrSelectionOut count")
        for _ in 0..<selections {
            _ = try r.u16("hash")
            let size = try r.u8("sizeofSelect")
            _ = try r.take(Int(size), "pcrSelect")
        }
        let count = try r.u32("digest count")
        guard count == 1 else { throw TPMEngineError(.malformed, "PCR \(index) of the SHA-256 bank is not allocated") }
        return try r.sized("digest")
    }

    /// TPM2_NV_DefineSpace under `hierarchy` (owner or platform).
    public func nvDefineSpace(_ index: UInt32, size: Int, attributes: UInt32, hierarchy: UInt32 = TPMConstant.rhOwner) throws {
        var pub = ByteWriter()
        pub.u32(index)
        pub.u16(TPMConstant.algSHA256)
        pub.u32(attributes)
        pub.u16(0)
        pub.u16(UInt16(size))
        var w = ByteWriter()
        w.u16(0)             // auth: empty
        w.sized(pub.bytes)   // TPM2B_NV_PUBLIC
        try run(TPMCommand(code: TPMConstant.ccNVDefineSpace, handles: [hierarchy], authorizations: 1, parameters: w.bytes), "TPM2_NV_DefineSpace")
    }

    /// TPM2_NV_Write of `data` at `offset`, in pieces of at most 1024 bytes, authorized
    /// by `auth` (the owner, the platform, or the index itself).
    public func nvWrite(_ index: UInt32, _ data: [UInt8], offset: Int = 0, auth: UInt32 = TPMConstant.rhOwner) throws {
        var written = 0
        repeat {
            let piece = Array(data[written..<min(data.count, written + 1024)])
            var w = ByteWriter()
            w.sized(piece)
            w.u16(UInt16(offset + written))
            try run(TPMCommand(code: TPMConstant.ccNVWrite, handles: [auth, index], authorizations: 1, parameters: w.bytes), "TPM2_NV_Write")
            written += piece.count
        } while written < data.count
    }

    /// TPM2_NV_WriteLock.
    public func nvWriteLock(_ index: UInt32, auth: UInt32 = TPMConstant.rhOwner) throws {
        try run(TPMCommand(code: TPMConstant.ccNVWriteLock, handles: [auth, index], authorizations: 1), "TPM2_NV_WriteLock")
    }

    /// TPM2_NV_Read of `size` bytes at `offset`, in pieces of at most 1024 bytes.
    public func nvRead(_ index: UInt32, size: Int, offset: Int = 0, auth: UInt32 = TPMConstant.rhOwner) throws -> [UInt8] {
        var out: [UInt8] = []
        while out.count < size {
            let count = min(1024, size - out.count)
            var w = ByteWriter()
            w.u16(UInt16(count))
            w.u16(UInt16(offset + out.count))
            var r = try run(TPMCommand(code: TPMConstant.ccNVRead, handles: [auth, index], authorizations: 1, parameters: w.bytes), "TPM2_NV_Read")
                .parameters()
            out += try r.sized("data")
        }
        return out
    }

    /// TPM2_ReadPublic: the object's TPMT_PUBLIC bytes.
    public func readPublic(_ handle: UInt32) throws -> [UInt8] {
        var r = try run(TPMCommand(code: TPMConstant.ccReadPublic, handles: [handle]), "TPM2_ReadPublic").parameters()
        return try r.sized("outPublic")
    }

    /// TPM2_CreatePrimary in `hierarchy` from a TPMT_PUBLIC template; returns the
    /// transient handle and the TPMT_PUBLIC of the new key.
    public func createPrimary(hierarchy: UInt32, template: [UInt8]) throws -> (handle: UInt32, publicArea: [UInt8]) {
        var w = ByteWriter()
        w.sized([0, 0, 0, 0])   // TPM2B_SENSITIVE_CREATE: empty userAuth, empty data
        w.sized(template)
        w.u16(0)                // outsideInfo
        w.u32(0)                // creationPCR: no selection
        let response = try run(TPMCommand(code: TPMConstant.ccCreatePrimary, handles: [hierarchy], authorizations: 1, parameters: w.bytes), "TPM2_CreatePrimary")
        var handles = ByteReader(response.body, subject: "TPM response handles")
        let handle = try handles.u32("objectHandle")
        var r = try response.parameters(handles: 1)
        return (handle, try r.sized("outPublic"))
    }

    /// TPM2_EvictControl: makes a transient object persistent at `persistentHandle`.
    public func evictControl(_ object: UInt32, persistentHandle: UInt32, auth: UInt32 = TPMConstant.rhOwner) throws {
        var w = ByteWriter()
        w.u32(persistentHandle)
        try run(TPMCommand(code: TPMConstant.ccEvictControl, handles: [auth, object], authorizations: 1, parameters: w.bytes), "TPM2_EvictControl")
    }

    /// TPM2_FlushContext.
    public func flushContext(_ handle: UInt32) throws {
        var w = ByteWriter()
        w.u32(handle)
        try run(TPMCommand(code: TPMConstant.ccFlushContext, parameters: w.bytes), "TPM2_FlushContext")
    }

    /// TPM2_PCR_Allocate (platform auth): only the SHA-256 bank, all 24 PCRs. Takes
    /// effect at the next TPM reset.
    public func allocateSHA256BankOnly() throws {
        var w = ByteWriter()
        let banks: [(UInt16, [UInt8])] = [
            (TPMConstant.algSHA1, [0, 0, 0]), (TPMConstant.algSHA256, [0xff, 0xff, 0xff]),
            (TPMConstant.algSHA384, [0, 0, 0]), (TPMConstant.algSHA512, [0, 0, 0]),
        ]
        w.u32(UInt32(banks.count))
        for (alg, select) in banks {
            w.u16(alg)
            w.u8(3)
            w.raw(select)
        }
        var r = try run(TPMCommand(code: TPMConstant.ccPCRAllocate, handles: [TPMConstant.rhPlatform], authorizations: 1, parameters: w.bytes),
                        "TPM2_PCR_Allocate").parameters()
        guard try r.u8("allocationSuccess") == 1 else { throw TPMEngineError(.tpmError, "TPM2_PCR_Allocate did not succeed") }
    }
}
