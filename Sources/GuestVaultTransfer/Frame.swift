import GuestVaultCrypto

/// Transfer frames (docs/TRANSFER.md §3).
///
/// ```
/// 0   4  body length n (u32, big-endian; at most 4 MiB + 16)
/// 4   1  type
/// 5   1  flags (0)
/// 6   2  zero
/// 8   8  sequence number (u64), per direction, from 0
/// 16  n  AES-256-GCM ciphertext and tag of the payload; AAD = bytes 0..<16;
///        nonce = [0]_4 || sequence
/// ```
public enum FrameType: UInt8, Sendable {
    case manifest = 1
    case key = 2
    case data = 3
    case final = 4
    case ack = 5
    case done = 6
    case error = 7
}

struct FrameHeader: Equatable {
    static let count = 16
    static let maximumBody = (4 << 20) + 16

    var bodyLength: UInt32
    var type: FrameType
    var sequence: UInt64

    var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(16)
        for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: bodyLength >> UInt32(shift))) }
        out += [type.rawValue, 0, 0, 0]
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: sequence >> UInt64(shift))) }
        return out
    }

    static func parse(_ b: ArraySlice<UInt8>) throws -> FrameHeader {
        let start = b.startIndex
        let length = b[start..<(start + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard Int(length) <= maximumBody, length >= 16 else {
            throw TransferError(.tooLarge, "a frame body of \(length) bytes is outside 16...\(maximumBody)")
        }
        guard let type = FrameType(rawValue: b[start + 4]) else {
            throw TransferError(.unexpectedFrame, "unknown frame type \(b[start + 4])")
        }
        guard b[start + 5] == 0, b[start + 6] == 0, b[start + 7] == 0 else {
            throw TransferError(.unexpectedFrame, "frame flags or reserved bytes are not zero")
        }
        let sequence = b[(start + 8)..<(start + 16)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return FrameHeader(bodyLength: length, type: type, sequence: sequence)
    }
}

/// Splits a byte stream into frames; asks for more bytes rather than guessing.
struct FrameDecoder {
    private var buffer: [UInt8] = []
    private var start = 0

    mutating func append(_ bytes: [UInt8]) {
        if start > 0 && start == buffer.count { buffer.removeAll(keepingCapacity: true); start = 0 }
        buffer += bytes
    }

    /// The next complete frame (header bytes, header, body), or nil for "need more".
    mutating func next() throws -> (headerBytes: [UInt8], header: FrameHeader, body: [UInt8])? {
        guard buffer.count - start >= FrameHeader.count else { return nil }
        let header = try FrameHeader.parse(buffer[start..<(start + FrameHeader.count)])
        let total = FrameHeader.count + Int(header.bodyLength)
        guard buffer.count - start >= total else { return nil }
        let headerBytes = Array(buffer[start..<(start + FrameHeader.count)])
        let body = Array(buffer[(start + FrameHeader.count)..<(start + total)])
        start += total
        if start > (8 << 20) {
            buffer.removeFirst(start)
            start = 0
        }
        return (headerBytes, header, body)
    }

    var isEmpty: Bool { buffer.count == start }
}
