import Foundation
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import Testing

/// Every single-bit flip and every truncation of a small container is refused: the
/// container does not open, or does not unlock, or an entry does not verify, or it opens
/// at an older generation that the vault refuses as a rollback.
@Suite struct TamperSweepTests {
    struct Small {
        let f: Fixture
        let logEnd: Int
        let original: [UInt8]
        let expected: [String: [UInt8]]

        init() throws {
            f = try Fixture()
            let expected = ["tpm.permanent": Array(repeating: UInt8(0x42), count: 300), "uefi.nvram": Array(0..<200).map { UInt8($0) }]
            do {
                let container = try f.create()
                for (name, bytes) in expected { try container.write(name, bytes) }
                try container.commit()
            }
            let info = try GuestStateContainer.open(at: f.statePath).info
            logEnd = 4096 + Int(info.logBytes)
            original = try FileSystem.readFile(f.statePath, limit: 16 << 20)
            self.expected = expected
        }

        /// Whether the file as it is now is accepted as the original content.
        func accepted() -> Bool {
            do {
                let container = try GuestStateContainer.open(at: f.statePath)
                try container.unlock(with: UnlockCredentials(vault: f.vault))
                for (name, bytes) in expected where try container.read(name) != bytes { return false }
                return true
            } catch {
                return false
            }
        }
    }

    @Test func everySingleBitFlipIsRefused() throws {
        let s = try Small()
        let file = try OpenFile(path: s.f.statePath, mode: .readWrite)
        #expect(s.accepted(), "the untouched container opens")
        var tried = 0, accepted = 0
        func flip(_ index: Int, _ bit: Int) throws {
            let byte = s.original[index] ^ UInt8(1 << bit)
            try file.write([byte], at: Int64(index))
            tried += 1
            if s.accepted() {
                accepted += 1
                Issue.record("a flip of bit \(bit) at byte \(index) was accepted")
            }
            try file.write([s.original[index]], at: Int64(index))
        }
        // Every bit of the header and of the whole log.
        for index in Array(0..<64) + Array(4096..<s.logEnd) {
            for bit in 0..<8 { try flip(index, bit) }
        }
        // The zero padding and the preallocated zeros after the log: a sample.
        for index in stride(from: 64, to: 4096, by: 61) { try flip(index, index % 8) }
        for index in stride(from: s.logEnd, to: min(s.original.count, s.logEnd + 65536), by: 1021) { try flip(index, index % 8) }
        #expect(accepted == 0)
        #expect(s.accepted(), "the restored container opens again")
        print("bit flips: container: \(tried) single-bit mutations tried, \(accepted) accepted")
    }

    @Test func everyTruncationIsRefused() throws {
        let s = try Small()
        let file = try OpenFile(path: s.f.statePath, mode: .readWrite)
        var tried = 0, accepted = 0
        for length in 0..<s.logEnd {
            try file.truncate(to: Int64(length))
            tried += 1
            if s.accepted() {
                accepted += 1
                Issue.record("truncation to \(length) bytes was accepted")
            }
            try file.write(Array(s.original[length...]), at: Int64(length))
        }
        // Cutting into the preallocated zeros after the log loses nothing: accepted.
        try file.truncate(to: Int64(s.logEnd))
        #expect(s.accepted())
        #expect(accepted == 0)
        print("truncations: container: \(tried) lengths tried, \(accepted) accepted")
    }
}
