/// Big-endian serialization, the writing half of ``ByteReader``.
public struct ByteWriter: Sendable {
    public var bytes: [UInt8] = []

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    /// The number of bytes written so far.
    public var count: Int { bytes.count }

    /// An integer of any fixed width, big-endian unless said otherwise.
    public mutating func write<T: FixedWidthInteger>(_ value: T, endianness: Endianness = .big) {
        let size = MemoryLayout<T>.size
        switch endianness {
        case .big:
            for index in stride(from: size - 1, through: 0, by: -1) {
                bytes.append(UInt8(truncatingIfNeeded: value >> (index * 8)))
            }
        case .little:
            for index in 0..<size {
                bytes.append(UInt8(truncatingIfNeeded: value >> (index * 8)))
            }
        }
    }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { write(v) }
    public mutating func u32(_ v: UInt32) { write(v) }
    public mutating func u64(_ v: UInt64) { write(v) }
    public mutating func raw(_ v: [UInt8]) { bytes.append(contentsOf: v) }
    public mutating func raw(_ v: ArraySlice<UInt8>) { bytes.append(contentsOf: v) }

    /// A length-prefixed byte string; the caller guarantees the length fits `Length`.
    public mutating func prefixed<Length: FixedWidthInteger & UnsignedInteger>(_ v: [UInt8], _ length: Length.Type) {
        write(Length(v.count))
        raw(v)
    }

    /// Overwrites a big-endian integer at `offset` (a length filled in afterwards).
    public mutating func patch<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        let size = MemoryLayout<T>.size
        for index in 0..<size {
            bytes[offset + index] = UInt8(truncatingIfNeeded: value >> ((size - 1 - index) * 8))
        }
    }
}

extension FixedWidthInteger {
    /// The value's big-endian bytes.
    public var bigEndianBytes: [UInt8] {
        var writer = ByteWriter(capacity: MemoryLayout<Self>.size)
        writer.write(self)
        return writer.bytes
    }

    /// Reads a big-endian value from exactly `MemoryLayout<Self>.size` bytes; nil for any
    /// other count. Inlinable: unspecialized across modules it cost serve's data channel
    /// more instructions per TPM command than libtpms' GetRandom (docs/PERFORMANCE.md).
    @inlinable
    public init?<Bytes: Collection>(bigEndianBytes bytes: Bytes) where Bytes.Element == UInt8 {
        guard bytes.count == MemoryLayout<Self>.size else { return nil }
        var value: Self = 0
        for byte in bytes { value = (value << 8) | Self(truncatingIfNeeded: byte) }
        self = value
    }
}
