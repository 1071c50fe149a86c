import Foundation
import Testing
import GuestVaultUEFI

/// The variable store templates of Debian 12's `ovmf` package, the real inputs of these
/// tests. Tests that need them are skipped, with the reason printed, only when the
/// package is not installed.
enum OVMF {
    static let directory = "/usr/share/OVMF"
    static let skipReason: Comment = "the ovmf package is not installed (/usr/share/OVMF/OVMF_VARS_4M.ms.fd is missing; apt-get install -y ovmf)"

    static var available: Bool {
        let present = FileManager.default.fileExists(atPath: "\(directory)/OVMF_VARS_4M.ms.fd")
        if !present { print("skipping the UEFI template tests: \(skipReason)") }
        return present
    }

    static func bytes(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(name)")))
    }

    static var microsoft: [UInt8] { get throws { try bytes("OVMF_VARS_4M.ms.fd") } }
    static var blank: [UInt8] { get throws { try bytes("OVMF_VARS_4M.fd") } }
}

/// Edits of a store that keep it consistent except for what a test breaks.
enum StoreEdit {
    static func u16(_ bytes: [UInt8], _ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
    static func u32(_ bytes: [UInt8], _ at: Int) -> Int {
        Int(bytes[at]) | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) << 16 | Int(bytes[at + 3]) << 24
    }

    static func put16(_ bytes: inout [UInt8], _ at: Int, _ value: Int) {
        bytes[at] = UInt8(truncatingIfNeeded: value)
        bytes[at + 1] = UInt8(truncatingIfNeeded: value >> 8)
    }

    static func put32(_ bytes: inout [UInt8], _ at: Int, _ value: UInt32) {
        for index in 0..<4 { bytes[at + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }

    static func put64(_ bytes: inout [UInt8], _ at: Int, _ value: UInt64) {
        for index in 0..<8 { bytes[at + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }

    /// Sets the firmware volume header checksum so its 16-bit words sum to zero again.
    static func fixChecksum(_ bytes: inout [UInt8]) {
        let headerLength = u16(bytes, 48)
        put16(&bytes, 50, 0)
        var sum: UInt16 = 0
        for index in stride(from: 0, to: headerLength, by: 2) { sum &+= UInt16(u16(bytes, index)) }
        put16(&bytes, 50, Int(0 &- sum))
    }

    /// The first `count` bytes as a consistent volume: FvLength, the block map (one block)
    /// and the store size say `count`, the checksum is fixed.
    static func cut(_ bytes: [UInt8], to count: Int) -> [UInt8] {
        var out = Array(bytes.prefix(count))
        let headerLength = u16(out, 48)
        put64(&out, 32, UInt64(count))
        put32(&out, 56, 1)
        put32(&out, 60, UInt32(count))
        put32(&out, 64, 0)
        put32(&out, 68, 0)
        put32(&out, headerLength + 16, UInt32(count - headerLength))
        fixChecksum(&out)
        return out
    }

    /// The offset of the first variable with this name in a store.
    static func offset(of name: String, in bytes: [UInt8]) throws -> Int {
        let store = try VariableStore.parse(bytes)
        guard let variable = store.variables.last(where: { $0.name == name }) else { throw CocoaError(.fileNoSuchFile) }
        return variable.offset
    }
}
