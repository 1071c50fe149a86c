import Foundation
import GuestVaultCore
import GuestVaultCrypto
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

    /// A container holding one two-chunk stream (256 KiB + 3,000 bytes): its layout is
    /// record header (32) + stream header (48) + sealed chunks (plaintext + 16-byte tag
    /// each), then the commit record (docs/FORMAT.md §5).
    struct Streamed {
        let f: Fixture
        let logEnd: Int
        let original: [UInt8]
        /// SHA-256 of the stream's content (compared instead of the bytes: a debug build
        /// compares 259 KiB slowly, and the sweep reads the stream thousands of times).
        let digest: [UInt8]
        static let chunk = 256 << 10
        let streamStart = 4096
        var firstChunkEnd: Int { streamStart + 32 + 48 + Self.chunk + 16 }
        var streamEnd: Int { firstChunkEnd + 3000 + 16 }

        init() throws {
            f = try Fixture()
            let content = (0..<(Self.chunk + 3000)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ $0 >> 9) }
            do {
                let container = try f.create()
                var offset = 0
                try container.writeStream("vm.runtime") { buffer in
                    let n = min(buffer.count, content.count - offset)
                    buffer.replaceSubrange(0..<n, with: content[offset..<(offset + n)])
                    offset += n
                    return n
                }
                try container.commit()
            }
            logEnd = 4096 + Int(try GuestStateContainer.open(at: f.statePath).info.logBytes)
            original = try FileSystem.readFile(f.statePath, limit: 16 << 20)
            digest = try SHA256.hash(content)
        }

        func accepted() -> Bool {
            do {
                let container = try GuestStateContainer.open(at: f.statePath)
                try container.unlock(with: UnlockCredentials(vault: f.vault))
                var hasher = try SHA256()
                try container.readStream("vm.runtime") { try hasher.update($0) }
                return try hasher.finalize() == digest
            } catch {
                return false
            }
        }
    }

    /// Stream records: every bit of the record and stream headers and of the commit
    /// after the stream; three bits of every byte around the chunks' edges (the first
    /// chunk's start, tail and tag, the second chunk's start, tail and tag); one bit of
    /// every 1009th byte inside the first chunk. And truncations at every one of those
    /// bytes.
    @Test func everyStreamMutationIsRefused() throws {
        let s = try Streamed()
        #expect(s.streamEnd < s.logEnd, "the layout the sweep assumes")
        #expect(s.accepted(), "the untouched container opens")
        let file = try OpenFile(path: s.f.statePath, mode: .readWrite)
        var tried = 0, accepted = 0
        // Every bit of the record and stream headers and of the commit; three bits of each
        // byte around the chunks' edges (sealed data and tags: any change fails the tag).
        let headers = Array(s.streamStart..<(s.streamStart + 80)) + Array(s.streamEnd..<s.logEnd)
        let edges = Array((s.streamStart + 80)..<(s.streamStart + 80 + 64)) + Array((s.firstChunkEnd - 64)..<(s.firstChunkEnd + 64))
            + Array((s.streamEnd - 64)..<s.streamEnd)
        let dense = headers + edges
        for index in dense {
            for bit in headers.contains(index) ? Array(0..<8) : [0, 3, 7] {
                try file.write([s.original[index] ^ UInt8(1 << bit)], at: Int64(index))
                tried += 1
                if s.accepted() { accepted += 1; Issue.record("a flip of bit \(bit) at byte \(index) was accepted") }
                try file.write([s.original[index]], at: Int64(index))
            }
        }
        for index in stride(from: s.streamStart + 80 + 64, to: s.firstChunkEnd - 64, by: 1009) {
            try file.write([s.original[index] ^ UInt8(1 << (index % 8))], at: Int64(index))
            tried += 1
            if s.accepted() { accepted += 1; Issue.record("a flip at byte \(index) was accepted") }
            try file.write([s.original[index]], at: Int64(index))
        }
        var cuts = 0
        for length in dense + Array(stride(from: s.streamStart, to: s.logEnd, by: 4099)) {
            try file.truncate(to: Int64(length))
            cuts += 1
            if s.accepted() { accepted += 1; Issue.record("truncation to \(length) bytes was accepted") }
            try file.write(s.original[length..<s.logEnd], at: Int64(length))
            try file.truncate(to: Int64(s.original.count))   // the preallocated zeros again
        }
        #expect(accepted == 0)
        #expect(s.accepted(), "the restored container opens again")
        print("bit flips: stream: \(tried) single-bit mutations and \(cuts) truncations of a two-chunk stream tried, \(accepted) accepted")
    }
}
