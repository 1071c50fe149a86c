// Framing of swtpm's data channel: TPM 2.0 commands in, TPM 2.0 responses out.
//
// Two request forms share the channel, told apart by their first bytes as swtpm does
// (`tpmlib_handle_tcg_tpm2_cmd_header`):
//
// - raw: a TPM command as the TPM 2.0 specification lays it out, header tag (u16), size
//   (u32, the whole command including the header) and command code (u32), all big-endian.
//   The response is the raw TPM response. QEMU and tpm2-tss' swtpm TCTI send this form.
// - prefixed (MSSIM style): TPM_SEND_COMMAND (u32 = 8), locality (u8), length (u32), then the
//   raw command of that length. The response is then length (u32), the raw response, and a
//   u32 zero. A request is prefixed when its tag is not TPM2_ST_NO_SESSIONS (0x8001) or
//   TPM2_ST_SESSIONS (0x8002) and its first u32 is 8.
//
// Unlike the control channel, the data channel is a plain stream: swtpm 0.7 takes one read()
// as one command, which breaks when a command is split; this decoder counts bytes instead,
// using the raw size field or the prefix's length, so split and back-to-back commands work.
// Any other tag (a TPM 1.2 probe, garbage) is framed by its size field and handed to the TPM,
// which answers with an error response, as swtpm does.

public import GuestVaultCore

/// One TPM command taken off the data channel.
public struct TPMCommandFrame: Sendable, Hashable {
    /// The TPM command, header included, without any prefix. At least 10 bytes.
    public let bytes: [UInt8]
    /// The locality of the MSSIM-style prefix (not checked: the server refuses values
    /// over 4). swtpm makes it the locality of this and later commands, as SET_LOCALITY does.
    public let locality: UInt8?
    /// Whether the command came with the prefix, so the response must go back framed.
    public let prefixed: Bool

    init(bytes: [UInt8], locality: UInt8?, prefixed: Bool) {
        precondition(bytes.count >= DataChannelDecoder.commandHeaderSize)
        self.bytes = bytes
        self.locality = locality
        self.prefixed = prefixed
    }

    /// The command header's tag.
    public var tag: UInt16 { UInt16(bigEndianBytes: bytes[0..<2]) ?? 0 }
    /// The command header's size field (for a prefixed command it may differ from
    /// `bytes.count`; the TPM then refuses the command).
    public var declaredSize: UInt32 { UInt32(bigEndianBytes: bytes[2..<6]) ?? 0 }
    /// The command code.
    public var commandCode: UInt32 { UInt32(bigEndianBytes: bytes[6..<10]) ?? 0 }

    /// What the server needs of a command besides its bytes (``DataChannelDecoder/next(into:)``).
    public struct Header: Sendable, Hashable {
        /// The MSSIM-style prefix's locality, if the command had the prefix.
        public let locality: UInt8?
        /// Whether the command came with the prefix, so the response must go back framed.
        public let prefixed: Bool
    }

    /// The bytes to send back for the TPM's `response` to this command.
    public func encodeResponse(_ response: [UInt8]) -> [UInt8] {
        DataChannelResponse.encode(response, prefixed: prefixed)
    }
}

/// Encoding data-channel responses.
public enum DataChannelResponse {
    /// The MSSIM command code of a prefixed request (TPM_SEND_COMMAND).
    public static let sendCommand: UInt32 = 8
    /// The length of the prefix of a prefixed request.
    public static let prefixSize = 9

    /// TPM_RC_FAILURE: swtpm's answer to any command while the TPM is not running (before
    /// INIT, after STOP). QEMU's startup probe (TPM2_ReadClock) gets this and only checks that
    /// the tag is 0x8001.
    public static let failureResponseCode: UInt32 = 0x101
    /// TPM_RC_COMMAND_SIZE: for a command whose size is out of range.
    public static let commandSizeResponseCode: UInt32 = 0x142

    /// `response` framed for the channel: unchanged, or with its length before it and a u32
    /// zero after it when the request was prefixed. Send it with one write.
    public static func encode(_ response: [UInt8], prefixed: Bool) -> [UInt8] {
        guard prefixed else { return response }
        var out = ByteWriter(capacity: response.count + 8)
        out.u32(UInt32(truncatingIfNeeded: response.count))
        out.raw(response)
        out.u32(0)
        return out.bytes
    }

    /// `encode(response, prefixed:)` into `out`, replacing its contents and keeping its
    /// storage (the server's hot path).
    public static func encode(_ response: [UInt8], prefixed: Bool, into out: inout [UInt8]) {
        out.removeAll(keepingCapacity: true)
        guard prefixed else {
            out.append(contentsOf: response)
            return
        }
        out.reserveCapacity(response.count + 8)
        out.append(contentsOf: UInt32(truncatingIfNeeded: response.count).bigEndianBytes)
        out.append(contentsOf: response)
        out.append(contentsOf: [0, 0, 0, 0] as [UInt8])
    }

    /// A 10-byte TPM 2.0 error response: tag 0x8001, size 10, `responseCode`.
    public static func error(_ responseCode: UInt32) -> [UInt8] {
        var out = ByteWriter(capacity: DataChannelDecoder.commandHeaderSize)
        out.u16(0x8001)
        out.u32(UInt32(DataChannelDecoder.commandHeaderSize))
        out.u32(responseCode)
        return out.bytes
    }
}

/// Why the data channel's stream cannot hold a valid command. The server may send
/// `errorResponse` and then closes that connection.
public struct DataChannelError: GuestVaultError, Hashable {
    /// The codes are ``ErrorCode`` statics: `.sizeTooSmall`, `.sizeOverLimit`, `.truncated`
    /// (the connection ended inside a command).
    public typealias Code = ErrorCode

    public let code: ErrorCode
    /// Whether the broken command had the MSSIM-style prefix.
    public let prefixed: Bool
    /// The byte offset, within the command (prefix included), of the field that is wrong.
    public let offset: Int
    /// The byte offset of the command's first byte in the connection's stream.
    public let streamOffset: Int
    public let reason: String
    public let location: SourceLocation

    public init(_ code: ErrorCode, prefixed: Bool, offset: Int, streamOffset: Int, reason: String,
                file: String = #fileID, line: Int = #line) {
        self.code = code
        self.prefixed = prefixed
        self.offset = offset
        self.streamOffset = streamOffset
        self.reason = reason
        self.location = SourceLocation(file: file, line: line)
    }

    /// A decoding error has no cause below it.
    public var underlying: (any Error & Sendable)? { nil }

    /// TPM_RC_COMMAND_SIZE as a TPM 2.0 error response, framed for the request's form.
    public var errorResponse: [UInt8] {
        DataChannelResponse.encode(DataChannelResponse.error(DataChannelResponse.commandSizeResponseCode),
                                   prefixed: prefixed)
    }

    public var message: String {
        let form = prefixed ? "prefixed TPM command" : "TPM command"
        return "data channel: \(form) at stream offset \(streamOffset), byte \(offset): \(reason)"
    }
}

/// Takes TPM commands off the data channel's byte stream. Feed it what recv() returns with
/// `append`, then call `next` until it returns nil. After an error it stays failed.
public struct DataChannelDecoder: Sendable {
    /// The TPM 2.0 command header: tag, size, command code.
    public static let commandHeaderSize = 10
    /// libtpms' TPM_BUFFER_MAX and the buffer size swtpm starts with.
    public static let defaultMaximumCommandSize = 4096

    /// The largest command accepted (without prefix). Set it to the size SET_BUFFERSIZE
    /// settled on.
    public var maximumCommandSize: Int {
        didSet { precondition(maximumCommandSize >= Self.commandHeaderSize) }
    }

    private var buffer: [UInt8] = []
    private var start = 0
    private var streamBase = 0
    private var failure: DataChannelError?

    public init(maximumCommandSize: Int = DataChannelDecoder.defaultMaximumCommandSize) {
        precondition(maximumCommandSize >= Self.commandHeaderSize)
        self.maximumCommandSize = maximumCommandSize
    }

    /// The bytes received and not yet consumed by a decoded command.
    public var bufferedByteCount: Int { buffer.count - start }

    /// Adds received bytes.
    public mutating func append(_ bytes: [UInt8]) {
        guard failure == nil else { return }
        buffer.append(contentsOf: bytes)
    }

    /// Adds received bytes (a slice of the server's receive buffer: no allocation once
    /// the decoder's buffer has grown).
    public mutating func append(_ bytes: ArraySlice<UInt8>) {
        guard failure == nil else { return }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete command, nil when more bytes are needed, or an error.
    public mutating func next() throws(DataChannelError) -> TPMCommandFrame? {
        if let failure { throw failure }
        do {
            return try decodeNext()
        } catch {
            failure = error
            throw error
        }
    }

    /// The common case without a copy: when the decoder holds nothing and `bytes` (one
    /// receive) are exactly one complete raw command within the size limit, they are
    /// counted as consumed and true is returned: the caller runs them where they are,
    /// as `next()` would have returned them. Otherwise nothing changes and the result is
    /// false (append them as usual).
    public mutating func consumeIfSingleCommand(_ bytes: ArraySlice<UInt8>) -> Bool {
        guard failure == nil, bufferedByteCount == 0, bytes.count >= Self.commandHeaderSize else { return false }
        let first = bytes.startIndex
        let tag = UInt16(bytes[first]) << 8 | UInt16(bytes[first + 1])
        guard tag == 0x8001 || tag == 0x8002 else { return false }
        var size = 0
        for index in (first + 2)..<(first + 6) { size = size << 8 | Int(bytes[index]) }
        guard size == bytes.count, size <= maximumCommandSize else { return false }
        streamBase += size
        return true
    }

    /// The next complete command, as `next()` decodes it, with its bytes put into
    /// `command` (its contents replaced, its storage kept): nil when more bytes are
    /// needed, `command` then unchanged.
    public mutating func next(into command: inout [UInt8]) throws(DataChannelError) -> TPMCommandFrame.Header? {
        if let failure { throw failure }
        do {
            guard let (body, header) = try locateNext() else { return nil }
            command.removeAll(keepingCapacity: true)
            command.append(contentsOf: buffer[body])
            consume(header.prefixed ? DataChannelResponse.prefixSize + body.count : body.count)
            return header
        } catch {
            failure = error
            throw error
        }
    }

    /// Call at the end of the stream, once `next` returned nil: throws `.truncated` if a
    /// command was begun. A connection that closes without sending anything is fine
    /// (tpm2-tss' swtpm TCTI opens and closes one as a check when it starts).
    public func finish() throws(DataChannelError) {
        if let failure { throw failure }
        let available = bufferedByteCount
        guard available > 0 else { return }
        throw DataChannelError(.truncated, prefixed: isPrefixed(available: available), offset: available,
                               streamOffset: streamBase + start,
                               reason: "the connection ended after \(available) bytes of a command")
    }

    // MARK: - Decoding

    private func isPrefixed(available: Int) -> Bool {
        guard available >= 4 else { return false }
        let tag = UInt16(bigEndianBytes: buffer[start..<(start + 2)])
        return tag != 0x8001 && tag != 0x8002
            && peekU32(at: start) == DataChannelResponse.sendCommand
    }

    private mutating func decodeNext() throws(DataChannelError) -> TPMCommandFrame? {
        guard let (body, header) = try locateNext() else { return nil }
        let frame = TPMCommandFrame(bytes: Array(buffer[body]), locality: header.locality, prefixed: header.prefixed)
        consume(header.prefixed ? DataChannelResponse.prefixSize + body.count : body.count)
        return frame
    }

    /// Where the next complete command's bytes (without prefix) lie in the buffer, and
    /// its form; nil when more bytes are needed. Consumes nothing.
    private func locateNext() throws(DataChannelError) -> (body: Range<Int>, header: TPMCommandFrame.Header)? {
        let available = bufferedByteCount
        // Six bytes tell the form and, for a raw command, its size.
        guard available >= 6 else { return nil }
        if isPrefixed(available: available) {
            guard available >= DataChannelResponse.prefixSize else { return nil }
            let length = try checkedSize(peekU32(at: start + 5), prefixed: true, offset: 5)
            guard available >= DataChannelResponse.prefixSize + length else { return nil }
            let body = start + DataChannelResponse.prefixSize
            return (body..<(body + length), TPMCommandFrame.Header(locality: buffer[start + 4], prefixed: true))
        } else {
            let size = try checkedSize(peekU32(at: start + 2), prefixed: false, offset: 2)
            guard available >= size else { return nil }
            return (start..<(start + size), TPMCommandFrame.Header(locality: nil, prefixed: false))
        }
    }

    /// The big-endian u32 at `index` of the buffer, whose bounds the caller checked.
    private func peekU32(at index: Int) -> UInt32 {
        UInt32(bigEndianBytes: buffer[index..<(index + 4)]) ?? 0
    }

    private func checkedSize(_ size: UInt32, prefixed: Bool, offset: Int) throws(DataChannelError) -> Int {
        let field = prefixed ? "prefix length" : "command size"
        guard size >= Self.commandHeaderSize else {
            throw DataChannelError(.sizeTooSmall, prefixed: prefixed, offset: offset,
                                   streamOffset: streamBase + start,
                                   reason: "\(field) \(size) is below the \(Self.commandHeaderSize)-byte header")
        }
        guard let value = Int(exactly: size), value <= maximumCommandSize else {
            throw DataChannelError(.sizeOverLimit, prefixed: prefixed, offset: offset,
                                   streamOffset: streamBase + start,
                                   reason: "\(field) \(size) is over the buffer size \(maximumCommandSize)")
        }
        return value
    }

    private mutating func consume(_ count: Int) {
        start += count
        if start == buffer.count {
            streamBase += buffer.count
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start >= 64 * 1024 {
            streamBase += start
            buffer.removeFirst(start)
            start = 0
        }
    }
}
