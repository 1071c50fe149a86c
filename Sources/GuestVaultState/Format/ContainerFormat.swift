import FoundationEssentials

/// Constants of the container format (docs/FORMAT.md). The files in Format/ are the
/// format as values: they parse and serialize bytes and do no I/O.
public enum ContainerFormat {
    public static let version: UInt16 = 1
    /// Where the record log starts (the header is padded to this offset).
    public static let logStart: Int64 = 4096
    /// The largest blob entry (bigger ones are streams).
    public static let maximumBlobSize = 64 << 20
    /// Entries per container.
    public static let maximumEntries = 1024
    /// The chunk size GuestVault writes streams with (a reader takes it from each
    /// stream's header).
    public static let chunkSize = 256 << 10
    /// Bytes of a commit record body a reader accepts.
    public static let maximumCommitSize = 1 << 20
    /// The largest plaintext a stream may declare.
    public static let maximumStreamLength: UInt64 = 1 << 56
}

/// A container's random 16-byte id: typed, so no module parses its hex display form
/// back. It encodes (JSON) and prints as 32 lowercase hex digits.
public struct ContainerID: Sendable, Hashable, Codable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// Nil unless `bytes` is 16 bytes.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// From 32 hex digits (what ``description`` prints), nil for anything else.
    public init?(hex: String) {
        let digits = Array(hex.utf8)
        guard digits.count == 32 else { return nil }
        var bytes: [UInt8] = []
        for pair in stride(from: 0, to: 32, by: 2) {
            guard let high = Self.nibble(digits[pair]), let low = Self.nibble(digits[pair + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        self.bytes = bytes
    }

    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes { out += [digits[Int(byte >> 4)], digits[Int(byte & 0x0f)]] }
        return String(decoding: out, as: UTF8.self)
    }

    public var description: String { hex }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = ContainerID(hex: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not 32 hex digits"))
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(hex)
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

func uuidBytes(_ id: UUID) -> [UInt8] { withUnsafeBytes(of: id.uuid) { Array($0) } }

/// A UUID from exactly 16 bytes (callers read them with a length check).
func uuid(from b: [UInt8]) -> UUID {
    precondition(b.count == 16, "a UUID is 16 bytes")
    return UUID(uuid: (b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]))
}
