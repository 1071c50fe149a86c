/// Bounds-checked big-endian reading of hostile bytes, one reader for every format in
/// GuestVault (container, key files, TPM marshalling, swtpm files and control channel,
/// transfer frames). Every read either returns a value or throws a ``ByteCodecError``
/// that names the field and its offset; no read traps on any input.
///
/// The reader works over an array and a window `[offset, end)` of it, so a parser can
/// read a sub-structure in place without copying. `base` is added to offsets in errors
/// (the position of `bytes` in its file or stream).
public struct ByteReader: Sendable {
    public let bytes: [UInt8]
    public private(set) var offset: Int
    public let end: Int
    /// Added to offsets in error messages.
    public let base: Int64
    /// What is being read, for error messages ("superblock", "control request").
    public let subject: String

    /// A reader over `bytes[start..<end]`. A window outside the array is clamped to it.
    public init(_ bytes: [UInt8], from start: Int = 0, to end: Int? = nil, base: Int64 = 0, subject: String) {
        self.bytes = bytes
        let upper = min(max(end ?? bytes.count, 0), bytes.count)
        self.offset = min(max(start, 0), upper)
        self.end = upper
        self.base = base
        self.subject = subject
    }

    /// A reader over a slice (its indices need not start at zero).
    public init(_ slice: ArraySlice<UInt8>, base: Int64 = 0, subject: String) {
        self.init(Array(slice), base: base, subject: subject)
    }

    /// Bytes left to read.
    public var remaining: Int { end - offset }
    /// The absolute position of the next byte (`base` + offset).
    public var position: Int64 { base &+ Int64(offset) }
    /// Whether every byte has been read.
    public var isAtEnd: Bool { offset >= end }

    /// A malformed-field error at the current position.
    public func malformed(_ field: String, _ reason: String) -> ByteCodecError {
        ByteCodecError(.malformed, subject: subject, field: field, position: position, reason: reason)
    }

    /// The next `count` bytes, in place.
    public mutating func take(_ count: Int, _ field: String) throws(ByteCodecError) -> ArraySlice<UInt8> {
        guard count >= 0 else {
            throw ByteCodecError(.malformed, subject: subject, field: field, position: position,
                                 reason: "negative length \(count)")
        }
        guard remaining >= count else {
            throw ByteCodecError(.truncated, subject: subject, field: field, position: position,
                                 reason: "needs \(count) bytes, \(remaining) remain")
        }
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }

    /// The next `count` bytes, where `count` came from the input as any integer type.
    public mutating func take<Count: BinaryInteger>(count: Count, _ field: String) throws(ByteCodecError) -> ArraySlice<UInt8> {
        guard let n = Int(exactly: count) else {
            throw ByteCodecError(.malformed, subject: subject, field: field, position: position,
                                 reason: "length \(count) is out of range")
        }
        return try take(n, field)
    }

    /// Skips `count` bytes.
    public mutating func skip(_ count: Int, _ field: String) throws(ByteCodecError) {
        _ = try take(count, field)
    }

    /// A big-endian (or little-endian) integer of any fixed width.
    public mutating func read<T: FixedWidthInteger>(_ type: T.Type = T.self, _ field: String,
                                                     endianness: Endianness = .big) throws(ByteCodecError) -> T {
        let size = MemoryLayout<T>.size
        let slice = try take(size, field)
        var value: T = 0
        switch endianness {
        case .big:
            for byte in slice { value = (value << 8) | T(truncatingIfNeeded: byte) }
        case .little:
            for byte in slice.reversed() { value = (value << 8) | T(truncatingIfNeeded: byte) }
        }
        return value
    }

    public mutating func u8(_ field: String) throws(ByteCodecError) -> UInt8 { try read(UInt8.self, field) }
    public mutating func u16(_ field: String) throws(ByteCodecError) -> UInt16 { try read(UInt16.self, field) }
    public mutating func u32(_ field: String) throws(ByteCodecError) -> UInt32 { try read(UInt32.self, field) }
    public mutating func u64(_ field: String) throws(ByteCodecError) -> UInt64 { try read(UInt64.self, field) }

    /// `count` bytes as a new array.
    public mutating func array(_ count: Int, _ field: String) throws(ByteCodecError) -> [UInt8] {
        Array(try take(count, field))
    }

    /// A length-prefixed byte string: a big-endian length of type `Length`, then that
    /// many bytes, refused above `limit`.
    public mutating func prefixed<Length: FixedWidthInteger & UnsignedInteger>(
        _ length: Length.Type, limit: Int = .max, _ field: String
    ) throws(ByteCodecError) -> [UInt8] {
        let declared = try read(Length.self, "\(field) length")
        guard let n = Int(exactly: declared), n <= limit else {
            throw ByteCodecError(.limit, subject: subject, field: field, position: position,
                                 reason: "length \(declared) is over the limit of \(limit) bytes")
        }
        return try array(n, field)
    }

    /// Throws unless every byte was read.
    public func expectEnd(_ what: String) throws(ByteCodecError) {
        guard remaining == 0 else {
            throw ByteCodecError(.malformed, subject: subject, field: what, position: position,
                                 reason: "\(remaining) unexpected trailing bytes")
        }
    }
}

/// Byte order of an integer field.
public enum Endianness: Sendable { case big, little }
