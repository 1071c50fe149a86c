/// TPM 2.0 marshalling: big-endian integers and sized buffers (TPM2B).
public struct TPMWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { bytes += [UInt8(v >> 8), UInt8(v & 0xff)] }
    public mutating func u32(_ v: UInt32) { bytes += [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
    public mutating func raw(_ v: [UInt8]) { bytes += v }
    /// A TPM2B: u16 size, then the bytes.
    public mutating func sized(_ v: [UInt8]) { u16(UInt16(v.count)); raw(v) }
}

/// Reads TPM 2.0 structures from hostile bytes; every read is bounds-checked.
public struct TPMReader: Sendable {
    public let bytes: [UInt8]
    public private(set) var offset: Int

    public init(_ bytes: [UInt8], offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    public var remaining: Int { bytes.count - offset }

    public mutating func take(_ count: Int, _ what: String) throws -> [UInt8] {
        guard count >= 0, remaining >= count else {
            throw TPMEngineError(.malformed, "\(what): needs \(count) bytes at offset \(offset), \(remaining) remain")
        }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    public mutating func u8(_ what: String) throws -> UInt8 { try take(1, what)[0] }
    public mutating func u16(_ what: String) throws -> UInt16 { try take(2, what).reduce(0) { $0 << 8 | UInt16($1) } }
    public mutating func u32(_ what: String) throws -> UInt32 { try take(4, what).reduce(0) { $0 << 8 | UInt32($1) } }
    public mutating func sized(_ what: String) throws -> [UInt8] { try take(Int(try u16("\(what) size")), what) }
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

    /// TPM_RC_INITIALIZE: Startup was already done (harmless at resume).
    public static let rcInitialize: UInt32 = 0x100
}

/// A marshalled TPM command.
public struct TPMCommand: Sendable {
    public let bytes: [UInt8]

    /// Builds a command. `authHandles` get an empty password session each.
    public init(code: UInt32, handles: [UInt32] = [], authorizations: Int = 0, parameters: [UInt8] = []) {
        var w = TPMWriter()
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
        var bytes = w.bytes
        let size = UInt32(bytes.count)
        bytes.replaceSubrange(2..<6, with: [UInt8(size >> 24), UInt8(size >> 16 & 0xff), UInt8(size >> 8 & 0xff), UInt8(size & 0xff)])
        self.bytes = bytes
    }

    public static func startup(_ type: UInt16) -> TPMCommand {
        var w = TPMWriter(); w.u16(type)
        return TPMCommand(code: TPMConstant.ccStartup, parameters: w.bytes)
    }

    public static func shutdown(_ type: UInt16) -> TPMCommand {
        var w = TPMWriter(); w.u16(type)
        return TPMCommand(code: TPMConstant.ccShutdown, parameters: w.bytes)
    }

    public static func getRandom(_ count: UInt16) -> TPMCommand {
        var w = TPMWriter(); w.u16(count)
        return TPMCommand(code: TPMConstant.ccGetRandom, parameters: w.bytes)
    }
}

/// A parsed TPM response: its code and, after the header, the rest.
public struct TPMResponse: Sendable {
    public let code: UInt32
    public let body: [UInt8]
    let hasSessions: Bool

    public init(_ bytes: [UInt8]) throws {
        var r = TPMReader(bytes)
        let tag = try r.u16("response tag")
        let size = try r.u32("response size")
        guard size == UInt32(bytes.count) else { throw TPMEngineError(.malformed, "response size field \(size) but \(bytes.count) bytes") }
        code = try r.u32("response code")
        body = try r.take(r.remaining, "response body")
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
    public func parameters(handles: Int = 0) throws -> TPMReader {
        var r = TPMReader(body)
        for i in 0..<handles { _ = try r.u32("handle \(i)") }
        if hasSessions { _ = try r.u32("parameter size") }
        return r
    }
}
