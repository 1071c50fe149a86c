/// The envelope swtpm puts around state blobs on its control channel (and in its state
/// files): a 10-byte header — version 2, minimum version 1, header size 10, flags,
/// total length (big-endian) — then TLV records (tag u16, length u32). A plain blob is
/// one record of tag 1. Blobs that QEMU fetches with GET_STATEBLOB and hands back with
/// SET_STATEBLOB keep this form, so state moves between swtpm and GuestVault either way.
enum StateBlobEnvelope {
    static let headerSize = 10
    static let tagData: UInt16 = 1
    static let maximumBlob = 4 << 20

    static func wrap(_ blob: [UInt8]) -> [UInt8] {
        var w = TPMWriter()
        w.u8(2)
        w.u8(1)
        w.u16(UInt16(headerSize))
        w.u16(0)
        w.u32(UInt32(headerSize + 6 + blob.count))
        w.u16(tagData)
        w.u32(UInt32(blob.count))
        w.raw(blob)
        return w.bytes
    }

    /// The plain data of an envelope; a blob without the envelope (no version-2 header)
    /// is taken as it is. Encrypted or migration-encrypted envelopes are refused: the
    /// state GuestVault hands out is never swtpm-encrypted.
    static func unwrap(_ bytes: [UInt8]) throws -> [UInt8] {
        guard bytes.count >= headerSize, bytes[0] == 2, bytes[2] == 0, bytes[3] == UInt8(headerSize) else { return bytes }
        var r = TPMReader(bytes)
        _ = try r.u8("version")
        let minimum = try r.u8("minimum version")
        _ = try r.u16("header size")
        let flags = try r.u16("flags")
        let total = try r.u32("total length")
        guard minimum <= 2, Int(total) == bytes.count else {
            throw TPMEngineError(.malformed, "state blob header says \(total) bytes, \(bytes.count) arrived")
        }
        guard flags & 0x03 == 0 else {
            throw TPMEngineError(.malformed, "the state blob is encrypted (flags 0x\(String(flags, radix: 16))); send it decrypted")
        }
        var data: [UInt8]?
        while r.remaining > 0 {
            let tag = try r.u16("record tag")
            let length = try r.u32("record length")
            guard Int(length) <= maximumBlob else { throw TPMEngineError(.malformed, "state blob record of \(length) bytes is too large") }
            let value = try r.take(Int(length), "record value")
            if tag == tagData { data = value }
        }
        guard let data else { throw TPMEngineError(.malformed, "the state blob has no data record") }
        return data
    }
}
