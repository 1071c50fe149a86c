/// Arithmetic on numbers that came from a file or a peer: never traps, says what
/// overflowed. Use it for every generation, epoch, length, offset and timeout.
public enum Checked {
    public struct Overflow: GuestVaultError {
        public let what: String
        public let location: SourceLocation
        public init(_ what: String, file: String = #fileID, line: Int = #line) {
            self.what = what
            self.location = SourceLocation(file: file, line: line)
        }
        public var code: ErrorCode { .malformed }
        public var message: String { "\(what) is out of range" }
        public var underlying: (any Error & Sendable)? { nil }
    }

    public static func add<T: FixedWidthInteger>(_ a: T, _ b: T, _ what: @autoclosure () -> String) throws(Overflow) -> T {
        let (value, overflow) = a.addingReportingOverflow(b)
        if overflow { throw Overflow(what()) }
        return value
    }

    public static func subtract<T: FixedWidthInteger>(_ a: T, _ b: T, _ what: @autoclosure () -> String) throws(Overflow) -> T {
        let (value, overflow) = a.subtractingReportingOverflow(b)
        if overflow { throw Overflow(what()) }
        return value
    }

    public static func multiply<T: FixedWidthInteger>(_ a: T, _ b: T, _ what: @autoclosure () -> String) throws(Overflow) -> T {
        let (value, overflow) = a.multipliedReportingOverflow(by: b)
        if overflow { throw Overflow(what()) }
        return value
    }

    /// Converts between integer types, refusing a value that does not fit.
    public static func convert<T: BinaryInteger, U: BinaryInteger>(_ value: U, to: T.Type, _ what: @autoclosure () -> String) throws(Overflow) -> T {
        guard let converted = T(exactly: value) else { throw Overflow(what()) }
        return converted
    }

    /// The successor of a generation or epoch, refusing the last value.
    public static func next<T: FixedWidthInteger & UnsignedInteger>(_ value: T, _ what: @autoclosure () -> String) throws(Overflow) -> T {
        try add(value, 1, what())
    }
}
