/// EFI_TIME as an authenticated variable stores it (16 bytes). All zero for a variable
/// that is not time-based authenticated.
public struct EFITime: Sendable, Hashable, Codable, CustomStringConvertible {
    public var year: UInt16
    public var month: UInt8
    public var day: UInt8
    public var hour: UInt8
    public var minute: UInt8
    public var second: UInt8
    public var nanosecond: UInt32
    /// Minutes from UTC; 0x07FF (2047) means "unspecified".
    public var timeZone: Int16
    public var daylight: UInt8

    public var isZero: Bool {
        year == 0 && month == 0 && day == 0 && hour == 0 && minute == 0 && second == 0 && nanosecond == 0
            && timeZone == 0 && daylight == 0
    }

    public var description: String {
        func two(_ v: UInt8) -> String { v < 10 ? "0\(v)" : "\(v)" }
        var year = String(year)
        while year.count < 4 { year = "0" + year }
        return "\(year)-\(two(month))-\(two(day))T\(two(hour)):\(two(minute)):\(two(second))"
    }
}

/// The variable attributes (EFI_VARIABLE_*).
public struct VariableAttributes: OptionSet, Sendable, Hashable, Codable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let nonVolatile = VariableAttributes(rawValue: 0x01)
    public static let bootServiceAccess = VariableAttributes(rawValue: 0x02)
    public static let runtimeAccess = VariableAttributes(rawValue: 0x04)
    public static let hardwareErrorRecord = VariableAttributes(rawValue: 0x08)
    public static let authenticatedWriteAccess = VariableAttributes(rawValue: 0x10)
    public static let timeBasedAuthenticatedWriteAccess = VariableAttributes(rawValue: 0x20)
    public static let appendWrite = VariableAttributes(rawValue: 0x40)
    public static let enhancedAuthenticatedAccess = VariableAttributes(rawValue: 0x80)

    private static let names: [(VariableAttributes, String)] = [
        (.nonVolatile, "NV"), (.bootServiceAccess, "BS"), (.runtimeAccess, "RT"), (.hardwareErrorRecord, "HR"),
        (.authenticatedWriteAccess, "AW"), (.timeBasedAuthenticatedWriteAccess, "AT"), (.appendWrite, "AP"),
        (.enhancedAuthenticatedAccess, "EA"),
    ]

    /// The short names UEFI tools use ("NV+BS+RT+AT"), with any unknown bits in hex.
    public var shortNames: String {
        var parts = Self.names.filter { contains($0.0) }.map(\.1)
        let unknown = rawValue & ~Self.names.reduce(0) { $0 | $1.0.rawValue }
        if unknown != 0 { parts.append("0x" + String(unknown, radix: 16)) }
        return parts.isEmpty ? "-" : parts.joined(separator: "+")
    }
}

/// Where a variable is in EDK2's life cycle. A variable's State byte starts at 0xFF and
/// bits are cleared as it is written (header valid, added) and removed (in deleted
/// transition, deleted), so a variable that was replaced stays in the store as deleted
/// until the store is reclaimed.
public enum VariableStatus: String, Sendable, Hashable, Codable {
    /// VAR_ADDED (0x3F): live.
    case added
    /// VAR_ADDED & VAR_IN_DELETED_TRANSITION (0x3E): live until its replacement is added
    /// (EDK2 uses it only when no VAR_ADDED copy of the same variable exists).
    case inDeletedTransition
    /// The VAR_DELETED bit (0x02) is cleared: a replaced or removed variable.
    case deleted
    /// VAR_HEADER_VALID_ONLY (0x7F): a write that stopped after its header.
    case headerOnly
    /// Any other State byte.
    case unknown

    public init(state: UInt8) {
        switch state {
        case 0x3F: self = .added
        case 0x3E: self = .inDeletedTransition
        case 0x7F: self = .headerOnly
        default: self = state & 0x02 == 0 ? .deleted : .unknown
        }
    }

    public var isLive: Bool { self == .added || self == .inDeletedTransition }
}

/// One variable of the store: its header fields, its name and its data.
public struct UEFIVariable: Sendable, Hashable {
    /// Offset of the variable header in the input.
    public let offset: Int
    /// The raw State byte and what it means.
    public let state: UInt8
    public var status: VariableStatus { VariableStatus(state: state) }
    public let attributes: VariableAttributes
    /// Authenticated headers only (nil in a plain store).
    public let monotonicCount: UInt64?
    public let timestamp: EFITime?
    public let publicKeyIndex: UInt32?
    /// The name without its terminating NUL (UTF-16LE decoded; unpaired surrogates become U+FFFD).
    public let name: String
    public let vendor: EFIGUID
    /// The name with control characters replaced (``UEFIText/printable(_:)``).
    public var printableName: String { UEFIText.printable(name) }
    /// Offset of the data in the input.
    public let dataOffset: Int
    public let data: [UInt8]
}
