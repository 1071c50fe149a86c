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
    static let maximumCapacity = 2 * (FrameHeader.count + FrameHeader.maximumBody)
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
        precondition(count >= 0 && count <= storage.count - end, "a read past the free space")
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
