import GuestVaultCore
import Testing

@Suite struct ByteCodecTests {
    @Test func integersRoundTripBigAndLittleEndian() throws {
        var writer = ByteWriter()
        writer.u8(0xab)
        writer.u16(0x0102)
        writer.u32(0x0304_0506)
        writer.u64(0x0708_090a_0b0c_0d0e)
        writer.write(UInt32(0x1122_3344), endianness: .little)
        #expect(writer.bytes == [0xab, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0x44, 0x33, 0x22, 0x11])
        var reader = ByteReader(writer.bytes, subject: "test")
        #expect(try reader.u8("a") == 0xab)
        #expect(try reader.u16("b") == 0x0102)
        #expect(try reader.u32("c") == 0x0304_0506)
        #expect(try reader.u64("d") == 0x0708_090a_0b0c_0d0e)
        #expect(try reader.read(UInt32.self, "e", endianness: .little) == 0x1122_3344)
        try reader.expectEnd("end")
    }

    @Test func shortInputIsTruncatedWithFieldAndOffset() {
        var reader = ByteReader([1, 2, 3], base: 100, subject: "frame")
        _ = try? reader.u16("first")
        #expect(throws: ByteCodecError.self) { try reader.u32("second") }
        do {
            _ = try reader.u32("second")
        } catch {
            #expect(error.code == .truncated)
            #expect(error.message == "frame at byte 102: second: needs 4 bytes, 1 remain")
        }
    }

    @Test func hostileLengthsNeverTrap() {
        var reader = ByteReader([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0], subject: "x")
        #expect(throws: ByteCodecError.self) { _ = try reader.prefixed(UInt64.self, limit: 1 << 20, "blob") }
        var negative = ByteReader([1, 2], subject: "x")
        #expect(throws: ByteCodecError.self) { _ = try negative.take(-1, "n") }
        var huge = ByteReader([1, 2], subject: "x")
        #expect(throws: ByteCodecError.self) { _ = try huge.take(count: UInt64.max, "n") }
        let window = ByteReader([1, 2, 3], from: 5, to: 99, subject: "x")
        #expect(window.remaining == 0)
    }

    @Test func trailingBytesAreRefused() throws {
        var reader = ByteReader([0, 1, 2], subject: "x")
        _ = try reader.u16("a")
        #expect(throws: ByteCodecError.self) { try reader.expectEnd("end") }
    }

    @Test func patchAndHelpers() {
        var writer = ByteWriter()
        writer.u32(0)
        writer.raw([9, 9])
        writer.patch(UInt32(2), at: 0)
        #expect(writer.bytes == [0, 0, 0, 2, 9, 9])
        #expect(UInt16(0xbeef).bigEndianBytes == [0xbe, 0xef])
        #expect(UInt16(bigEndianBytes: [0xbe, 0xef]) == 0xbeef)
        #expect(UInt16(bigEndianBytes: [0xbe]) == nil)
    }
}

@Suite struct CheckedArithmeticTests {
    @Test func overflowIsAnErrorNotATrap() throws {
        #expect(throws: Checked.Overflow.self) { _ = try Checked.next(UInt64.max, "generation") }
        #expect(throws: Checked.Overflow.self) { _ = try Checked.next(UInt32.max, "epoch") }
        #expect(throws: Checked.Overflow.self) { _ = try Checked.multiply(Int64.max, 2, "size") }
        #expect(throws: Checked.Overflow.self) { _ = try Checked.subtract(UInt8(0), 1, "count") }
        #expect(throws: Checked.Overflow.self) { _ = try Checked.convert(UInt64.max, to: Int.self, "length") }
        #expect(try Checked.next(UInt64(41), "generation") == 42)
    }
}

@Suite struct ErrorChainTests {
    struct Outer: GuestVaultError {
        var code: ErrorCode
        var message: String
        var underlying: (any Error & Sendable)?
        var location = SourceLocation()
    }

    @Test func codesSurviveWrapping() {
        let inner = Outer(code: ErrorCode("rollback", .rollback), message: "vm1.state: generation 3 is older than 7")
        let outer = Outer(code: ErrorCode("wrapped", .failure), message: "receive failed", underlying: inner)
        #expect(ErrorChain.category(of: outer) == .rollback)
        #expect(ErrorChain.contains(ErrorCode("rollback", .rollback), in: outer))
        #expect(ErrorChain.message(of: outer) == "receive failed: vm1.state: generation 3 is older than 7")
        #expect(ErrorCategory.rollback.exitCode == 9)
        #expect(ErrorCategory.allCases.allSatisfy { $0.exitCode > 0 && $0.exitCode < 128 })
        #expect(Set(ErrorCategory.allCases.map(\.exitCode)).count == ErrorCategory.allCases.count)
    }
}
