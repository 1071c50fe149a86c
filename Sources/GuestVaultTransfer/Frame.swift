import GuestVaultCore
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
public enum FrameType: UInt8, Sendable, CaseIterable {
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
    static let maximumBody: UInt32 = (4 << 20) + 16

    var bodyLength: UInt32
    var type: FrameType
    var sequence: UInt64

    var bytes: [UInt8] {
        var out = ByteWriter(capacity: Self.count)
        out.u32(bodyLength)
        out.u8(type.rawValue)
        out.raw([0, 0, 0])
        out.u64(sequence)
        return out.bytes
    }

    /// Parses the 16 header bytes (the caller has them all).
    static func parse(_ b: ArraySlice<UInt8>) throws -> FrameHeader {
        var reader = ByteReader(b, subject: "frame header")
        let length: UInt32
        let typeByte: UInt8
        let reserved: ArraySlice<UInt8>
        let sequence: UInt64
        do {
            length = try reader.u32("body length")
            typeByte = try reader.u8("type")
            reserved = try reader.take(3, "flags and reserved bytes")
            sequence = try reader.u64("sequence number")
        } catch {
            throw TransferError(.truncated, "a frame header of \(b.count) bytes is incomplete", underlying: error)
        }
        guard length <= maximumBody, length >= 16 else {
            throw TransferError(.tooLarge, "a frame body of \(length) bytes is outside 16...\(maximumBody)")
        }
        guard let type = FrameType(rawValue: typeByte) else {
            throw TransferError(.unexpectedFrame, "unknown frame type \(typeByte)")
        }
        guard reserved.allSatisfy({ $0 == 0 }) else {
            throw TransferError(.unexpectedFrame, "frame flags or reserved bytes are not zero")
        }
        return FrameHeader(bodyLength: length, type: type, sequence: sequence)
    }
}

/// Splits a byte stream into frames inside one reused buffer; asks for more bytes
/// rather than guessing. A complete frame is returned as its place in ``storage`` (header
/// at `start`, body after it), where the caller opens it in place: received bytes are
/// copied once, from the kernel into ``storage``. A returned place stays valid until the
/// next ``append(_:)`` or ``fill(_:)``, which may move unconsumed bytes to the front.
struct FrameDecoder {
    /// The bytes; frames are opened in place here.
    var storage: [UInt8]
    /// The first byte not yet returned as part of a frame.
    private(set) var start = 0
    /// The end of the bytes received.
    private(set) var end = 0

    /// At most room for two of the largest frames, so one can be read while a part of
    /// the next waits at the end. The buffer starts small and grows to what the frames
    /// need: a session of small frames never allocates megabytes.
    static let maximumCapacity = 2 * (FrameHeader.count + Int(FrameHeader.maximumBody))
    static let initialCapacity = 64 << 10

    init() {
        storage = [UInt8](repeating: 0, count: Self.initialCapacity)
    }

    /// Copies `bytes` in (tests, fuzzing and small reads).
    mutating func append(_ bytes: [UInt8]) {
        var rest = bytes[...]
        while !rest.isEmpty {
            makeRoom()
            let count = min(rest.count, storage.count - end)
            storage.replaceSubrange(end..<(end + count), with: rest.prefix(count))
            end += count
            rest = rest.dropFirst(count)
        }
    }

    /// Reads once into the free space through `read(buffer, offset, maximum)`, which
    /// returns how many bytes it put at `offset` (0: the end of the stream). Returns that
    /// count.
    mutating func fill(_ read: (inout [UInt8], Int, Int) throws -> Int) throws -> Int {
        makeRoom()
        let count = try read(&storage, end, storage.count - end)
        guard count >= 0, count <= storage.count - end else {
            throw TransferError(.io, "the channel reported \(count) bytes read into \(storage.count - end) bytes of room")
        }
        end += count
        return count
    }

    /// Moves the unconsumed bytes to the front when the free space at the end cannot
    /// take the rest of the frame they start (or is empty), and grows the buffer when the
    /// frame is larger than it (twice that frame, so the next one's start fits too).
    private mutating func makeRoom() {
        if start == end { start = 0; end = 0 }
        var needed = FrameHeader.count
        if end - start >= FrameHeader.count, let header = try? FrameHeader.parse(storage[start..<(start + FrameHeader.count)]) {
            needed = FrameHeader.count + Int(header.bodyLength)
        }
        if needed >= storage.count {
            storage += [UInt8](repeating: 0, count: min(2 * needed, Self.maximumCapacity) - storage.count)
        }
        if start + needed > storage.count || end == storage.count {
            storage.withUnsafeMutableBytes { raw in
                raw.baseAddress!.copyMemory(from: raw.baseAddress! + start, byteCount: end - start)
            }
            end -= start
            start = 0
        }
    }

    /// The next complete frame's header and where it starts in ``storage``, or nil for
    /// "need more bytes". A bad header throws, and the decoder stays failed.
    mutating func next() throws -> (header: FrameHeader, at: Int)? {
        if let failure { throw failure }
        guard end - start >= FrameHeader.count else { return nil }
        let header: FrameHeader
        do {
            header = try FrameHeader.parse(storage[start..<(start + FrameHeader.count)])
        } catch let error as TransferError {
            failure = error
            throw error
        }
        let total = FrameHeader.count + Int(header.bodyLength)
        guard end - start >= total else { return nil }
        let at = start
        start += total
        return (header, at)
    }

    private var failure: TransferError?

    var isEmpty: Bool { end == start }
}
