/// The control channel's messages as the server reads them: a u32 big-endian command
/// code, then the command's fixed fields (big-endian), then for HASH_DATA and
/// SET_STATEBLOB `length` bytes of data. See docs/SERVER.md.
enum ControlMessage: Equatable {
    case getCapability
    case initialize(flags: UInt32)
    case shutdown
    case getTPMEstablished
    case setLocality(UInt8)
    case hashStart
    case hashData([UInt8])
    case hashEnd
    case cancelTPMCommand
    case storeVolatile
    case resetTPMEstablished(locality: UInt8)
    case getStateBlob(flags: UInt32, type: UInt32, offset: UInt32)
    case setStateBlob(flags: UInt32, type: UInt32, blob: [UInt8])
    case stop
    case getConfig
    case setDataFD
    case setBufferSize(UInt32)
    case getInfo(flags: UInt64, offset: UInt32)
    case lockStorage(retries: UInt32)

    struct DecodingError: Error {
        let reason: String
        let resultCode: UInt32
    }

    static let maximumHashData = 4096
    static let maximumStateBlob = 4 << 20

    /// Takes one complete message off the front of `buffer`; nil if more bytes are
    /// needed. Throws for an unknown command or an oversized length (the caller answers
    /// with an error and closes the connection).
    static func next(from buffer: inout [UInt8]) throws -> ControlMessage? {
        guard buffer.count >= 4 else { return nil }
        var r = TPMReader(buffer)
        let code = try r.u32("command")
        func need(_ count: Int) -> Bool { buffer.count >= count }
        let message: ControlMessage
        let consumed: Int
        switch code {
        case 0x01: message = .getCapability; consumed = 4
        case 0x02:
            guard need(8) else { return nil }
            message = .initialize(flags: try r.u32("init flags")); consumed = 8
        case 0x03: message = .shutdown; consumed = 4
        case 0x04: message = .getTPMEstablished; consumed = 4
        case 0x05:
            guard need(5) else { return nil }
            message = .setLocality(try r.u8("locality")); consumed = 5
        case 0x06: message = .hashStart; consumed = 4
        case 0x07:
            guard need(8) else { return nil }
            let length = Int(try r.u32("hash data length"))
            guard length <= maximumHashData else {
                throw DecodingError(reason: "HASH_DATA of \(length) bytes is over \(maximumHashData)", resultCode: 3)
            }
            guard need(8 + length) else { return nil }
            message = .hashData(try r.take(length, "hash data")); consumed = 8 + length
        case 0x08: message = .hashEnd; consumed = 4
        case 0x09: message = .cancelTPMCommand; consumed = 4
        case 0x0A: message = .storeVolatile; consumed = 4
        case 0x0B:
            guard need(5) else { return nil }
            message = .resetTPMEstablished(locality: try r.u8("locality")); consumed = 5
        case 0x0C:
            guard need(16) else { return nil }
            message = .getStateBlob(flags: try r.u32("state flags"), type: try r.u32("blob type"), offset: try r.u32("offset")); consumed = 16
        case 0x0D:
            guard need(16) else { return nil }
            let flags = try r.u32("state flags"), type = try r.u32("blob type")
            let length = Int(try r.u32("blob length"))
            guard length <= maximumStateBlob else {
                throw DecodingError(reason: "SET_STATEBLOB of \(length) bytes is over \(maximumStateBlob)", resultCode: 3)
            }
            guard need(16 + length) else { return nil }
            message = .setStateBlob(flags: flags, type: type, blob: try r.take(length, "state blob")); consumed = 16 + length
        case 0x0E: message = .stop; consumed = 4
        case 0x0F: message = .getConfig; consumed = 4
        case 0x10: message = .setDataFD; consumed = 4
        case 0x11:
            guard need(8) else { return nil }
            message = .setBufferSize(try r.u32("buffer size")); consumed = 8
        case 0x12:
            guard need(20) else { return nil }
            let high = UInt64(try r.u32("info flags")), low = UInt64(try r.u32("info flags"))
            message = .getInfo(flags: high << 32 | low, offset: try r.u32("offset")); consumed = 20
        case 0x13:
            guard need(8) else { return nil }
            message = .lockStorage(retries: try r.u32("retries")); consumed = 8
        default:
            throw DecodingError(reason: "unknown control command 0x\(String(code, radix: 16))", resultCode: 10)   // TPM_BAD_ORDINAL
        }
        buffer.removeFirst(consumed)
        return message
    }
}

/// Replies on the control channel: the `resp` part of swtpm's structures, big-endian.
enum ControlReply {
    static let success: UInt32 = 0
    static let fail: UInt32 = 9
    static let badParameter: UInt32 = 3
    static let badOrdinal: UInt32 = 10
    static let badLocality: UInt32 = 61

    static func result(_ code: UInt32) -> [UInt8] {
        var w = TPMWriter(); w.u32(code); return w.bytes
    }

    /// PTM_CAP_* bits of what the server implements.
    static let capabilities: UInt64 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7)
        | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 13) | (1 << 14) | (1 << 15)
}

/// One TPM command on the data channel: raw (10-byte header with the size), or in the
/// TCG simulator form `TPM_SEND_COMMAND (8) | locality u8 | length u32 | command`,
/// answered as `length u32 | response | u32 0`.
struct DataFrame {
    let command: [UInt8]
    let locality: UInt8?
    let prefixed: Bool

    static let sendCommand: UInt32 = 8

    static func next(from buffer: inout [UInt8], maximum: Int) throws -> DataFrame? {
        guard buffer.count >= 10 else { return nil }
        var r = TPMReader(buffer)
        let first = try r.u32("first word")
        if first == sendCommand {
            let locality = try r.u8("locality")
            let length = Int(try r.u32("command length"))
            guard (10...maximum).contains(length) else { throw TPMEngineError(.malformed, "prefixed TPM command of \(length) bytes") }
            guard buffer.count >= 9 + length else { return nil }
            let command = Array(buffer[9..<(9 + length)])
            buffer.removeFirst(9 + length)
            return DataFrame(command: command, locality: locality, prefixed: true)
        }
        var header = TPMReader(buffer)
        _ = try header.u16("tag")
        let size = Int(try header.u32("command size"))
        guard (10...maximum).contains(size) else { throw TPMEngineError(.malformed, "TPM command of \(size) bytes (maximum \(maximum))") }
        guard buffer.count >= size else { return nil }
        let command = Array(buffer[0..<size])
        buffer.removeFirst(size)
        return DataFrame(command: command, locality: nil, prefixed: false)
    }

    static func prefixedResponse(_ response: [UInt8]) -> [UInt8] {
        var w = TPMWriter()
        w.u32(UInt32(response.count))
        w.raw(response)
        w.u32(0)
        return w.bytes
    }
}
