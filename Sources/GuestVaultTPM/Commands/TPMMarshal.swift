public import GuestVaultCore

/// TPM 2.0 marshalling on GuestVaultCore's codec: integers are big-endian; a TPM2B is a
/// u16 size and then the bytes.
extension ByteWriter {
    /// A TPM2B: u16 size, then the bytes (at most 65,535 of them: a TPM2B's size field).
    public mutating func sized(_ v: [UInt8]) {
        precondition(v.count <= Int(UInt16.max), "a TPM2B holds at most 65535 bytes")
        prefixed(v, UInt16.self)
    }
}

extension ByteReader {
    /// A TPM2B: u16 size, then that many bytes.
    public mutating func sized(_ what: String) throws(ByteCodecError) -> [UInt8] {
        try prefixed(UInt16.self, what)
    }
}

/// TPM 2.0 constants used here (TPM 2.0 Library, Part 2).
public enum TPMConstant {
    public static let stNoSessions: UInt16 = 0x8001
    public static let stSessions: UInt16 = 0x8002

    public static let rhOwner: UInt32 = 0x4000_0001
    public static let rhEndorsement: UInt32 = 0x4000_000B
    public static let rhPlatform: UInt32 = 0x4000_000C
    public static let rsPassword: UInt32 = 0x4000_0009

    public static let algSHA1: UInt16 = 0x0004
    public static let algSHA256: UInt16 = 0x000B
    public static let algSHA384: UInt16 = 0x000C
    public static let algSHA512: UInt16 = 0x000D
    public static let algRSA: UInt16 = 0x0001
    public static let algECC: UInt16 = 0x0023
    public static let algAES: UInt16 = 0x0006
    public static let algCFB: UInt16 = 0x0043
    public static let algNull: UInt16 = 0x0010
    public static let eccNistP256: UInt16 = 0x0003
    public static let eccNistP384: UInt16 = 0x0004

    public static let suClear: UInt16 = 0x0000
    public static let suState: UInt16 = 0x0001

    public static let ccNVDefineSpace: UInt32 = 0x12A
    public static let ccPCRAllocate: UInt32 = 0x12B
    public static let ccEvictControl: UInt32 = 0x120
    public static let ccCreatePrimary: UInt32 = 0x131
    public static let ccNVWrite: UInt32 = 0x137
    public static let ccNVWriteLock: UInt32 = 0x138
    public static let ccStartup: UInt32 = 0x144
    public static let ccShutdown: UInt32 = 0x145
    public static let ccNVRead: UInt32 = 0x14E
    public static let ccFlushContext: UInt32 = 0x165
    public static let ccReadPublic: UInt32 = 0x173
    public static let ccGetRandom: UInt32 = 0x17B
    public static let ccPCRRead: UInt32 = 0x17E
    public static let ccPCRExtend: UInt32 = 0x182
    public static let ccGetCapability: UInt32 = 0x17A

    /// TPM_CAP_PCRS: the PCR banks and their allocation.
    public static let capPCRs: UInt32 = 0x0000_0005

    /// TPM_RC_INITIALIZE: Startup was already done (harmless at resume).
    public static let rcInitialize: UInt32 = 0x100
}

/// A marshalled TPM command.
public struct TPMCommand: Sendable {
    public let bytes: [UInt8]

    /// Builds a command. `authHandles` get an empty password session each.
    public init(code: UInt32, handles: [UInt32] = [], authorizations: Int = 0, parameters: [UInt8] = []) {
        var w = ByteWriter()
        w.u16(authorizations > 0 ? TPMConstant.stSessions : TPMConstant.stNoSessions)
        w.u32(0)
        w.u32(code)
        for handle in handles { w.u32(handle) }
        if authorizations > 0 {
            // TPMS_AUTH_COMMAND: TPM_RS_PW, empty nonce, attributes 0, empty password.
            w.u32(UInt32(9 * authorizations))
            for _ in 0..<authorizations {
                w.u32(TPMConstant.rsPassword)
                w.u16(0)
                w.u8(0)
                w.u16(0)
            }
        }
        w.raw(parameters)
        w.patch(UInt32(truncatingIfNeeded: w.count), at: 2)
        self.bytes = w.bytes
    }

    public static func startup(_ type: UInt16) -> TPMCommand {
        var w = ByteWriter(); w.u16(type)
        return TPMCommand(code: TPMConstant.ccStartup, parameters: w.bytes)
    }

    public static func shutdown(_ type: UInt16) -> TPMCommand {
        var w = ByteWriter(); w.u16(type)
        return TPMCommand(code: TPMConstant.ccShutdown, parameters: w.bytes)
    }

    public static func getRandom(_ count: UInt16) -> TPMCommand {
        var w = ByteWriter(); w.u16(count)
        return TPMCommand(code: TPMConstant.ccGetRandom, parameters: w.bytes)
    }
}

/// A parsed TPM response: its code and, after the header, the rest.
public struct TPMResponse: Sendable {
    public let code: UInt32
    public let body: [UInt8]
    let hasSessions: Bool

    public init(_ bytes: [UInt8]) throws {
        var r = ByteReader(bytes, subject: "TPM response")
        let tag = try r.u16("tag")
        let size = try r.u32("size")
        guard size == UInt32(bytes.count) else { throw TPMEngineError(.malformed, "response size field \(size) but \(bytes.count) bytes") }
        code = try r.u32("response code")
        body = try r.array(r.remaining, "body")
        hasSessions = tag == TPMConstant.stSessions
    }

    /// Throws unless the command succeeded.
    public func check(_ command: String) throws {
        guard code == 0 else {
            throw TPMEngineError(.tpmError, "\(command) failed with TPM response code 0x\(String(code, radix: 16))", responseCode: code)
        }
    }

    /// A reader positioned at the response parameters, past `handles` handles and the
    /// parameter size of a session response.
    public func parameters(handles: Int = 0) throws -> ByteReader {
        var r = ByteReader(body, subject: "TPM response parameters")
        for i in 0..<handles { _ = try r.u32("handle \(i)") }
        if hasSessions { _ = try r.u32("parameter size") }
        return r
    }
}
