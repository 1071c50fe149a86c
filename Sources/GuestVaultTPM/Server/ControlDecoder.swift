public import GuestVaultCore

// Decoding swtpm control-channel requests from a hostile byte stream.
//
// Framing. The control channel has no length prefix: a request is a u32 command code and a
// payload whose size follows from the command (and, for HASH_DATA and SET_STATEBLOB, from a
// length field). swtpm reads a request as "whatever one recvmsg() returned, plus further
// reads until the command's minimum size is there"; bytes that arrived in the same read past
// that minimum belong to the same request. That matters because clients disagree about the
// size of some payloads: QEMU sends SET_LOCALITY and RESET_TPMESTABLISHED with the locality
// byte padded to four bytes (`sizeof(ptm_loc)`), tpm2-tss and swtpm_ioctl send the one byte.
// A decoder that only counted bytes would read QEMU's three padding bytes as the start of
// the next request.
//
// So `ControlDecoder` keeps the receive boundaries: call `append` once per recv() with
// exactly the bytes that call returned. A request ends at the end of the receive in which
// its minimum size was reached. Commands whose payload swtpm checks for an exact size
// (no payload, INIT, HASH_DATA, SET_STATEBLOB) must not carry extra bytes; the others may,
// and the extra bytes are ignored, as swtpm ignores them. A request may span any number of
// receives (QEMU writes SET_STATEBLOB's header and its blob with two writes; TCP may split
// anything); `next()` returns nil until it is complete and never guesses.

/// Why a control-channel request was refused. The server answers with `reply` (when it is
/// not nil) and closes that connection; the server itself keeps running.
public struct ControlChannelError: GuestVaultError, Hashable {
    /// The codes are ``ErrorCode`` statics: `.unknownCommand`, `.lengthOverLimit`,
    /// `.malformed` (bytes the command does not allow), `.truncated` (the connection ended
    /// or timed out inside a request).
    public typealias Code = ErrorCode

    public let code: ErrorCode
    /// The request's command code, when at least its four bytes arrived.
    public let commandCode: UInt32?
    /// The byte offset, within the request, of the field that is wrong.
    public let offset: Int
    /// The byte offset of the request's first byte in the connection's stream.
    public let streamOffset: Int
    public let reason: String
    public let location: SourceLocation

    public init(_ code: ErrorCode, commandCode: UInt32?, offset: Int, streamOffset: Int, reason: String,
                file: String = #fileID, line: Int = #line) {
        self.code = code
        self.commandCode = commandCode
        self.offset = offset
        self.streamOffset = streamOffset
        self.reason = reason
        self.location = SourceLocation(file: file, line: line)
    }

    /// A decoding error has no cause below it.
    public var underlying: (any Error & Sendable)? { nil }

    /// The command, when its code is a known one.
    public var command: ControlCommand? { commandCode.flatMap(ControlCommand.init(rawValue:)) }

    /// The result to send before closing: TPM_BAD_ORDINAL for an unknown command (as swtpm),
    /// TPM_FAIL for an oversized state blob (as swtpm 0.8+), TPM_BAD_PARAMETER otherwise;
    /// nil for a truncated request, where swtpm closes without a reply.
    public var reply: PTMResult? {
        switch code {
        case .unknownCommand: .badOrdinal
        case .truncated: nil
        case .lengthOverLimit where commandCode == ControlCommand.setStateBlob.rawValue: .fail
        default: .badParameter
        }
    }

    public var message: String {
        let what = command.map(\.description) ?? commandCode.map(SWTPMText.hex) ?? "request"
        return "control channel: \(what) at stream offset \(streamOffset), byte \(offset): \(reason)"
    }
}

/// Decodes control-channel requests from the bytes of one connection. Feed it each receive
/// with `append`, then call `next` until it returns nil. See the top of this file for how
/// requests are framed; docs/SWTPM-PROTOCOL.md for the wire format.
///
/// After an error the decoder stays failed: `next` throws the same error again.
public struct ControlDecoder: Sendable {
    /// The default cap on one request: a SET_STATEBLOB header and a 4 MiB blob. swtpm 0.8+
    /// refuses blobs over 512 KiB; a TPM 2.0 permanent state with EK certificates is ~6 KiB.
    public static let defaultMaximumMessage = 16 + 4 * 1024 * 1024
    /// The smallest cap `init` accepts: a full HASH_DATA request.
    public static let smallestMaximumMessage = 8 + ControlChannelLimits.maximumHashData

    /// The most bytes one request may have, its command code included.
    public let maximumMessage: Int
    /// The largest SET_STATEBLOB blob accepted.
    public var maximumStateBlob: Int { maximumMessage - 16 }

    private var buffer: [UInt8] = []
    /// The first byte of `buffer` not yet consumed.
    private var start = 0
    /// Where appended receives end in `buffer`, ascending. Ends that come before the point
    /// where the pending request can complete are dropped; the rest are all here.
    private var receiveEnds: [Int] = []
    /// The stream offset of `buffer[0]`.
    private var streamBase = 0
    private var failure: ControlChannelError?

    public init(maximumMessage: Int = ControlDecoder.defaultMaximumMessage) {
        precondition(maximumMessage >= Self.smallestMaximumMessage,
                     "maximumMessage must hold a full HASH_DATA request")
        self.maximumMessage = maximumMessage
    }

    /// The bytes received and not yet consumed by a decoded request.
    public var bufferedByteCount: Int { buffer.count - start }

    /// Adds the bytes of one receive. Empty receives are ignored (end of stream is `finish`).
    public mutating func append(_ bytes: [UInt8]) {
        guard !bytes.isEmpty, failure == nil else { return }
        buffer.append(contentsOf: bytes)
        receiveEnds.append(buffer.count)
    }

    /// The next complete request, nil when more bytes are needed, or an error when the
    /// stream cannot hold a valid request.
    public mutating func next() throws(ControlChannelError) -> ControlRequest? {
        if let failure { throw failure }
        do {
            return try decodeNext()
        } catch {
            failure = error
            throw error
        }
    }

    /// Call at the end of the stream (or when the server gives up waiting, as swtpm does
    /// after 500 ms), once `next` returned nil: throws `.truncated` if a request was begun.
    public func finish() throws(ControlChannelError) {
        if let failure { throw failure }
        let available = bufferedByteCount
        guard available > 0 else { return }
        let code = available >= 4 ? peekU32(at: start) : nil
        throw ControlChannelError(
            .truncated, commandCode: code, offset: available, streamOffset: streamBase + start,
            reason: "the connection ended after \(available) bytes of a request")
    }

    // MARK: - Decoding

    /// How a request is laid out: its minimum size, and whether bytes past it are allowed.
    private struct Shape {
        var size: Int
        var exact: Bool
    }

    private mutating func decodeNext() throws(ControlChannelError) -> ControlRequest? {
        let available = bufferedByteCount
        guard available >= 4 else { return nil }
        let code = peekU32(at: start)
        guard let command = ControlCommand(rawValue: code) else {
            throw error(.unknownCommand, code, offset: 0,
                        "unknown command code \(SWTPMText.hex(code))")
        }
        guard let shape = try shape(of: command, available: available) else { return nil }
        guard available >= shape.size else {
            // Every receive so far ends before the request can; only later ones matter.
            // (Keeps a blob sent a byte at a time from growing this list.)
            receiveEnds.removeAll(keepingCapacity: true)
            return nil
        }

        // The request ends with the receive that completed it.
        let complete = start + shape.size
        guard let end = receiveEnds.first(where: { $0 >= complete }) else {
            preconditionFailure("receive boundaries do not cover the buffer")
        }
        let extra = end - complete
        if extra > 0 {
            if shape.exact {
                throw error(.malformed, code, offset: shape.size,
                            "\(extra) bytes follow the \(shape.size)-byte request in the same receive")
            }
            if end - start > maximumMessage {
                throw error(.lengthOverLimit, code, offset: shape.size,
                            "the request and its trailing bytes exceed \(maximumMessage) bytes")
            }
        }
        let request: ControlRequest
        do {
            request = try fields(of: command, at: start, size: shape.size)
        } catch {
            // Unreachable: the whole request is in the buffer. Kept as an error, not a trap.
            throw self.error(.malformed, code, offset: Int(error.position) - streamBase - start, error.message)
        }
        consume(to: end)
        return request
    }

    /// The shape of `command`, or nil when a length field has not arrived yet.
    private func shape(of command: ControlCommand, available: Int) throws(ControlChannelError) -> Shape? {
        switch command {
        case .getCapability, .setDataFD:
            // swtpm does not look at their size.
            return Shape(size: 4, exact: false)
        case .shutdown, .getTPMEstablished, .hashStart, .hashEnd, .cancelTPMCommand,
             .storeVolatile, .stop, .getConfig:
            return Shape(size: 4, exact: true)
        case .initialize:
            return Shape(size: 8, exact: true)
        case .setLocality, .resetTPMEstablished:
            return Shape(size: 5, exact: false)
        case .setBufferSize, .lockStorage:
            return Shape(size: 8, exact: false)
        case .getStateBlob:
            return Shape(size: 16, exact: false)
        case .getInfo:
            return Shape(size: 20, exact: false)
        case .hashData:
            guard available >= 8 else { return nil }
            let length = peekU32(at: start + 4)
            guard length <= ControlChannelLimits.maximumHashData else {
                throw error(.lengthOverLimit, command.rawValue, offset: 4,
                            "hash data length \(length) is over \(ControlChannelLimits.maximumHashData)")
            }
            return Shape(size: 8 + Int(length), exact: true)
        case .setStateBlob:
            guard available >= 16 else { return nil }
            let length = peekU32(at: start + 12)
            guard Int(length) <= maximumStateBlob else {
                throw error(.lengthOverLimit, command.rawValue, offset: 12,
                            "state blob length \(length) is over \(maximumStateBlob)")
            }
            return Shape(size: 16 + Int(length), exact: true)
        }
    }

    /// The big-endian u32 at `index` of the buffer, whose bounds the caller checked.
    private func peekU32(at index: Int) -> UInt32 {
        UInt32(bigEndianBytes: buffer[index..<(index + 4)]) ?? 0
    }

    /// Reads the fields of a request whose `size` bytes are all in the buffer at `base`.
    private func fields(of command: ControlCommand, at base: Int, size: Int) throws(ByteCodecError) -> ControlRequest {
        var r = ByteReader(buffer, from: base, to: base + size, base: Int64(streamBase), subject: "control request")
        _ = try r.u32("command code")
        switch command {
        case .getCapability: return .getCapability
        case .initialize: return .initialize(flags: PTMInitFlags(rawValue: try r.u32("init flags")))
        case .shutdown: return .shutdown
        case .getTPMEstablished: return .getTPMEstablished
        case .setLocality: return .setLocality(try r.u8("locality"))
        case .hashStart: return .hashStart
        case .hashData: return .hashData(try r.prefixed(UInt32.self, limit: ControlChannelLimits.maximumHashData, "hash data"))
        case .hashEnd: return .hashEnd
        case .cancelTPMCommand: return .cancelTPMCommand
        case .storeVolatile: return .storeVolatile
        case .resetTPMEstablished: return .resetTPMEstablished(locality: try r.u8("locality"))
        case .getStateBlob:
            let flags = PTMStateFlags(rawValue: try r.u32("state flags"))
            let type = PTMBlobType(rawValue: try r.u32("blob type"))
            return .getStateBlob(type: type, flags: flags, offset: try r.u32("offset"))
        case .setStateBlob:
            let flags = PTMStateFlags(rawValue: try r.u32("state flags"))
            let type = PTMBlobType(rawValue: try r.u32("blob type"))
            return .setStateBlob(type: type, flags: flags, blob: try r.prefixed(UInt32.self, limit: maximumStateBlob, "state blob"))
        case .stop: return .stop
        case .getConfig: return .getConfig
        case .setDataFD: return .setDataFD
        case .setBufferSize: return .setBufferSize(try r.u32("buffer size"))
        case .getInfo:
            // The u32 after the offset is padding; swtpm ignores it.
            let flags = PTMInfoFlags(rawValue: try r.u64("info flags"))
            return .getInfo(flags: flags, offset: try r.u32("offset"))
        case .lockStorage: return .lockStorage(retries: try r.u32("retries"))
        }
    }

    private mutating func consume(to end: Int) {
        start = end
        receiveEnds.removeAll { $0 <= end }
        if start == buffer.count {
            streamBase += buffer.count
            // Keep a small buffer's storage for the next request; let a large blob's go.
            buffer.removeAll(keepingCapacity: buffer.capacity <= 64 * 1024)
            start = 0
        } else if start >= 64 * 1024 {
            streamBase += start
            buffer.removeFirst(start)
            receiveEnds = receiveEnds.map { $0 - start }
            start = 0
        }
    }

    private func error(_ code: ErrorCode, _ commandCode: UInt32, offset: Int,
                       _ reason: String) -> ControlChannelError {
        ControlChannelError(code, commandCode: commandCode, offset: offset,
                            streamOffset: streamBase + start, reason: reason)
    }
}
