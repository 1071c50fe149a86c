import FoundationEssentials

/// Entry names (docs/FORMAT.md §3.4). A name is its UTF-8 bytes: names are equal when
/// their bytes are, and sorted by their bytes (unsigned, shorter first on a common
/// prefix), which for the NFC names a writer accepts is also the order of their code
/// points.
///
/// A writer accepts a name (``isValid(_:)``) of 1 to 255 bytes of UTF-8 in NFC, without
/// controls (C0, DEL, C1), format characters (U+200B, U+FEFF, …), unassigned, private-use
/// or surrogate code points, line or paragraph separators, U+FFFD (what invalid UTF-8
/// becomes on its way into a Swift string: `k\xff` and `k\xfe` would be one name), and
/// without any white space other than U+0020, which may not lead or trail.
///
/// A reader accepts what earlier writers wrote (``isReadable(_:)``): valid UTF-8, 1 to 255
/// bytes, no C0 control or DEL, no white space other than U+0020 and none leading or
/// trailing; in a commit, in strictly increasing byte order.
public enum EntryName {
    /// The names GuestVault itself uses.
    public static let tpmPermanent = "tpm.permanent"
    public static let tpmVolatile = "tpm.volatile"
    public static let tpmSaveState = "tpm.savestate"
    public static let tpmPPI = "tpm.ppi"
    public static let uefiNVRAM = "uefi.nvram"
    public static let vmID = "vm.id"
    public static let vmRuntime = "vm.runtime"

    public static let maximumByteCount = 255

    /// Whether a writer may create an entry of this name.
    public static func isValid(_ name: String) -> Bool {
        guard isReadable(name) else { return false }
        for scalar in name.unicodeScalars {
            if scalar == "\u{FFFD}" { return false }
            switch scalar.properties.generalCategory {
            case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator:
                return false
            default:
                continue
            }
        }
        return isNFC(name)
    }

    /// Whether a reader accepts this name in an existing container.
    public static func isReadable(_ name: String) -> Bool {
        let count = name.utf8.count
        guard count >= 1, count <= maximumByteCount else { return false }
        for scalar in name.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7f { return false }
            if scalar.properties.isWhitespace && scalar != " " { return false }
        }
        return name.first != " " && name.last != " "
    }

    /// The name in `bytes` if they are valid UTF-8 and a readable name.
    static func decode(_ bytes: [UInt8]) -> String? {
        guard let name = String(validating: bytes, as: UTF8.self), isReadable(name) else { return nil }
        return name
    }

    /// Byte order: whether `a` sorts before `b` (never true for equal names).
    static func precedes(_ a: String, _ b: String) -> Bool {
        a.utf8.lexicographicallyPrecedes(b.utf8)
    }

    /// Byte equality (not Swift's canonical equivalence).
    static func same(_ a: String, _ b: String) -> Bool {
        a.utf8.elementsEqual(b.utf8)
    }

    private static func isNFC(_ name: String) -> Bool {
        if name.utf8.allSatisfy({ $0 < 0x80 }) { return true }
        // The standard library's NFC (Foundation's precomposedStringWithCanonicalMapping
        // is not in FoundationEssentials, which is all the per-VM executable links).
        return name._nfcCodeUnits.elementsEqual(name.utf8)
    }
}
