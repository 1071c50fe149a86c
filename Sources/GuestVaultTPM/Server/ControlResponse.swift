import GuestVaultCore

// MARK: - Replies

/// One control-channel reply, encoded exactly as swtpm 0.7.1 writes it. Write each reply with
/// one write (or writev): swtpm_ioctl and tpm2-tss read the reply with a single read.
public enum ControlResponse: Sendable, Hashable {
    /// 4 bytes: the result. The reply of INIT, SHUTDOWN, SET_LOCALITY, HASH_*, CANCEL_TPM_CMD,
    /// STORE_VOLATILE, RESET_TPMESTABLISHED, SET_STATEBLOB, STOP, SET_DATAFD, LOCK_STORAGE, of
    /// an unknown command, and of every command that fails before doing its work.
    case result(PTMResult)
    /// 8 bytes: the capabilities as a u64. swtpm 0.7 has no result field here; the upper half
    /// of the u64 is zero, so the first four bytes read as TPM_SUCCESS (later swtpm versions
    /// define the same bytes as a result plus a u32).
    case capabilities(PTMCapabilities)
    /// 8 bytes: result, the established bit (0 or 1), three zero bytes of struct padding.
    case tpmEstablished(result: PTMResult, established: Bool)
    /// 16 bytes plus the data: result, state flags, total length, length, data. Both lengths
    /// are the number of data bytes. When the result is not success the data is left out and
    /// both lengths are 0.
    case stateBlob(result: PTMResult, flags: PTMStateFlags, data: [UInt8])
    /// 8 bytes: result, configuration flags.
    case config(result: PTMResult, flags: PTMConfigFlags)
    /// 16 bytes: result, the buffer size in use, the minimum and the maximum size.
    case bufferSize(result: PTMResult, size: UInt32, minimum: UInt32, maximum: UInt32)
    /// 12 bytes plus the chunk: result, the total length of the text including its
    /// terminating NUL, the chunk's length, the chunk.
    case info(result: PTMResult, totalLength: UInt32, chunk: [UInt8])

    /// The reply's bytes.
    public func encoded() -> [UInt8] {
        var out = ByteWriter()
        switch self {
        case .result(let result):
            out.write(result.rawValue)
        case .capabilities(let caps):
            out.write(caps.rawValue)
        case .tpmEstablished(let result, let established):
            out.write(result.rawValue)
            out.raw([established ? 1 : 0, 0, 0, 0])
        case .stateBlob(let result, let flags, let data):
            let body = result == .success ? data : []
            out.bytes.reserveCapacity(ControlChannelLimits.stateBlobReplyHeader + body.count)
            out.write(result.rawValue)
            out.write(flags.rawValue)
            out.u32(UInt32(truncatingIfNeeded: body.count))
            out.u32(UInt32(truncatingIfNeeded: body.count))
            out.raw(body)
        case .config(let result, let flags):
            out.write(result.rawValue)
            out.write(flags.rawValue)
        case .bufferSize(let result, let size, let minimum, let maximum):
            out.write(result.rawValue)
            out.write(size)
            out.write(minimum)
            out.write(maximum)
        case .info(let result, let totalLength, let chunk):
            out.write(result.rawValue)
            out.write(totalLength)
            out.u32(UInt32(truncatingIfNeeded: chunk.count))
            out.raw(chunk)
        }
        return out.bytes
    }

    /// The GET_STATEBLOB reply for `blob` read from `offset`, as swtpm builds it: the bytes
    /// from the offset to the end, all in this one reply (nothing when the offset is at or
    /// past the end).
    public static func stateBlob(
        result: PTMResult, flags: PTMStateFlags, blob: [UInt8], offset: UInt32
    ) -> ControlResponse {
        let start = Int(offset)
        let data = start < blob.count ? Array(blob[start...]) : []
        return .stateBlob(result: result, flags: flags, data: data)
    }

    /// The GET_INFO reply for the JSON `text` (libtpms' `TPMLIB_GetInfo` output) read from
    /// `offset`, as swtpm builds it: the text is sent with its terminating NUL, at most
    /// `ControlChannelLimits.maximumInfoChunk` bytes at a time; an offset at or past the end
    /// of the text (not counting the NUL) is TPM_BAD_PARAMETER.
    public static func info(text: String, offset: UInt32) -> ControlResponse {
        var bytes = Array(text.utf8)
        let textLength = bytes.count
        guard Int(offset) < textLength else { return .result(.badParameter) }
        bytes.append(0)
        let start = Int(offset)
        let end = min(bytes.count, start + ControlChannelLimits.maximumInfoChunk)
        return .info(result: .success, totalLength: UInt32(bytes.count), chunk: Array(bytes[start..<end]))
    }
}
