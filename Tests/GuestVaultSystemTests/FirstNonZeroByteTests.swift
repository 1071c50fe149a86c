import Foundation
import GuestVaultSystem
import Testing

/// The log scan's check that a container's tail is zeroes (OpenFile.firstNonZeroByte):
/// the first non-zero byte is found wherever it is (inside or after a 32-byte step, at
/// the edges of the 1 MiB read buffer, in the last bytes), and an all-zero range is nil.
@Suite("first non-zero byte of a file range")
struct FirstNonZeroByteTests {
    @Test func findsTheByteWhereverItIs() throws {
        let path = NSTemporaryDirectory() + "gv-nonzero-\(UUID().uuidString)"
        defer { unlink(path) }
        let size = (1 << 20) + 100
        let file = try OpenFile(creating: path)
        try file.write([UInt8](repeating: 0, count: size), at: 0)
        #expect(try file.firstNonZeroByte(at: 0, count: Int64(size)) == nil)
        #expect(try file.firstNonZeroByte(at: 7, count: Int64(size - 7)) == nil)
        let positions = [0, 1, 7, 8, 31, 32, 33, 63, 64, 1000, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, size - 1]
        for position in positions {
            try file.write([0x01], at: Int64(position))
            for start in [0, 3, 32].filter({ $0 <= position }) {
                #expect(try file.firstNonZeroByte(at: Int64(start), count: Int64(size - start)) == Int64(position), "byte at \(position), from \(start)")
            }
            // A range that ends before the byte does not see it.
            if position > 0 { #expect(try file.firstNonZeroByte(at: 0, count: Int64(position)) == nil) }
            try file.write([0x00], at: Int64(position))
        }
        // A range past the end of the file reads what is there.
        #expect(try file.firstNonZeroByte(at: Int64(size - 10), count: 1000) == nil)
    }
}
