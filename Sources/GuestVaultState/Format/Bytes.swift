/// Big-endian writing and bounds-checked reading, for every format in this module.
struct ByteWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xff)) }
    mutating func u32(_ v: UInt32) { for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(shift))) } }
    mutating func u64(_ v: UInt64) { for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(shift))) } }
    mutating func raw(_ v: [UInt8]) { bytes.append(contentsOf: v) }
    mutating func raw(_ v: ArraySlice<UInt8>) { bytes.append(contentsOf: v) }
}

/// Reads fields from hostile bytes: every read is bounds-checked and a failure names
/// the field and its offset.
struct ByteReader {
    let bytes: [UInt8]
    private(set) var offset: Int
    let end: Int
    /// Added to offsets in messages (the position of `bytes` in its file).
    let base: Int64
    let subject: String

    init(_ bytes: [UInt8], from start: Int = 0, to end: Int? = nil, base: Int64 = 0, subject: String) {
        self.bytes = bytes
        self.offset = start
        self.end = end ?? bytes.count
        self.base = base
        self.subject = subject
    }

    var remaining: Int { end - offset }
    var position: Int64 { base + Int64(offset) }

    func error(_ field: String, _ reason: String) -> ContainerError {
        ContainerError(.malformed, subject: "\(subject) at byte \(position)", reason: "\(field): \(reason)")
    }

    mutating func take(_ count: Int, _ field: String) throws -> ArraySlice<UInt8> {
        guard count >= 0, remaining >= count else {
            throw ContainerError(.truncated, subject: "\(subject) at byte \(position)",
                                 reason: "\(field) needs \(count) bytes, \(remaining) remain")
        }
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }

    mutating func u8(_ field: String) throws -> UInt8 { try take(1, field).first! }
    mutating func u16(_ field: String) throws -> UInt16 { try take(2, field).reduce(0) { $0 << 8 | UInt16($1) } }
    mutating func u32(_ field: String) throws -> UInt32 { try take(4, field).reduce(0) { $0 << 8 | UInt32($1) } }
    mutating func u64(_ field: String) throws -> UInt64 { try take(8, field).reduce(0) { $0 << 8 | UInt64($1) } }
    mutating func array(_ count: Int, _ field: String) throws -> [UInt8] { Array(try take(count, field)) }

    func expectEnd(_ what: String) throws {
        guard remaining == 0 else { throw error(what, "\(remaining) unexpected trailing bytes") }
    }
}
