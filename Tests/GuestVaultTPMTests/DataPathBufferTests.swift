#if canImport(Glibc)
import Glibc
#endif
import Foundation
import GuestVaultCore
import GuestVaultSystem
import GuestVaultTestSupport
import Testing
import GuestVaultTPM

// The server's allocation-free data path (docs/PERFORMANCE.md, third round): the decoder
// hands a command out into a buffer the server keeps, responses are framed into another,
// and the poll set is reused between iterations. Each must give exactly what the
// allocating forms give.

private struct Mix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// TPM2_GetRandom(8) raw, and with the MSSIM prefix at locality 3.
private let getRandom: [UInt8] = [0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x7b, 0, 8]
private let prefixedGetRandom: [UInt8] = [0, 0, 0, 8, 3, 0, 0, 0, 0x0c] + getRandom

private struct Decoded: Equatable {
    let bytes: [UInt8]
    let locality: UInt8?
    let prefixed: Bool
}

@Suite("DataPathBuffers")
struct DataPathBufferTests {
    @Test("next(into:) gives the frames next() gives, for any split of a mixed stream", arguments: [1, 2, 3, 4])
    func intoMatchesNext(seed: UInt64) throws {
        var random = Mix64(state: seed)
        var stream: [UInt8] = []
        for i in 0..<40 {
            let size = Int.random(in: 10...300, using: &random)
            var command: [UInt8] = [0x80, 0x01] + UInt32(size).bigEndianBytes + UInt32(0x17b + i).bigEndianBytes
            command += (10..<size).map { _ in UInt8.random(in: 0...255, using: &random) }
            if i % 3 == 0 {
                stream += UInt32(8).bigEndianBytes + [UInt8(i % 5)] + UInt32(size).bigEndianBytes + command
            } else {
                stream += command
            }
        }
        var pieces: [ArraySlice<UInt8>] = []
        var offset = 0
        while offset < stream.count {
            let n = min(Int.random(in: 1...97, using: &random), stream.count - offset)
            pieces.append(stream[offset..<(offset + n)])
            offset += n
        }
        var reference = DataChannelDecoder()
        var decoder = DataChannelDecoder()
        var expected: [Decoded] = []
        var got: [Decoded] = []
        var command: [UInt8] = []
        for piece in pieces {
            reference.append(Array(piece))
            while let frame = try reference.next() {
                expected.append(Decoded(bytes: frame.bytes, locality: frame.locality, prefixed: frame.prefixed))
            }
            decoder.append(piece)
            while let header = try decoder.next(into: &command) {
                got.append(Decoded(bytes: command, locality: header.locality, prefixed: header.prefixed))
            }
        }
        try decoder.finish()
        #expect(got.count == 40)
        #expect(got == expected)
    }

    @Test("a receive that is exactly one raw command is taken whole, as next() would take it", arguments: [5, 6, 7])
    func singleCommandFastPath(seed: UInt64) throws {
        var random = Mix64(state: seed)
        // Receives: whole raw commands, whole prefixed ones, halves, and two at once.
        var receives: [[UInt8]] = []
        for i in 0..<60 {
            let size = Int.random(in: 10...140, using: &random)
            let tag: [UInt8] = i % 7 == 3 ? [0x00, 0xc1] : (i % 2 == 0 ? [0x80, 0x01] : [0x80, 0x02])
            var command = tag + UInt32(size).bigEndianBytes + UInt32(0x17b).bigEndianBytes
            command += (10..<size).map { _ in UInt8.random(in: 0...255, using: &random) }
            switch i % 5 {
            case 0: receives.append(UInt32(8).bigEndianBytes + [2] + UInt32(size).bigEndianBytes + command)
            case 1: receives.append(Array(command.prefix(size / 2))); receives.append(Array(command.dropFirst(size / 2)))
            case 2 where !receives.isEmpty: receives[receives.count - 1] += command
            default: receives.append(command)
            }
        }
        // Then a command whose size field is too small: both must fail at the same offset.
        receives.append([0x80, 0x01, 0, 0, 0, 4, 0, 0, 1, 0x7b])
        var reference = DataChannelDecoder(maximumCommandSize: 150)
        var fast = DataChannelDecoder(maximumCommandSize: 150)
        var expected: [Decoded] = [], got: [Decoded] = []
        var taken = 0
        var command: [UInt8] = []
        var referenceError: DataChannelError?, fastError: DataChannelError?
        for receive in receives {
            if referenceError == nil {
                reference.append(receive)
                do {
                    while let frame = try reference.next() {
                        expected.append(Decoded(bytes: frame.bytes, locality: frame.locality, prefixed: frame.prefixed))
                    }
                } catch { referenceError = error }
            }
            if fastError == nil {
                if fast.consumeIfSingleCommand(receive[...]) {
                    taken += 1
                    got.append(Decoded(bytes: receive, locality: nil, prefixed: false))
                    continue
                }
                fast.append(receive[...])
                do {
                    while let header = try fast.next(into: &command) {
                        got.append(Decoded(bytes: command, locality: header.locality, prefixed: header.prefixed))
                    }
                } catch { fastError = error }
            }
        }
        #expect(taken > 5, "the fast path was taken \(taken) times")
        #expect(got == expected)
        let failed = try #require(fastError)
        #expect(failed == referenceError)
    }

    @Test("next(into:) leaves the buffer alone while a command is incomplete, and fails as next() does")
    func incompleteAndFailure() throws {
        var decoder = DataChannelDecoder()
        var command: [UInt8] = [1, 2, 3]
        decoder.append(Array(getRandom.prefix(7)))
        #expect(try decoder.next(into: &command) == nil)
        #expect(command == [1, 2, 3])
        decoder.append(Array(getRandom.dropFirst(7)))
        let header = try decoder.next(into: &command)
        #expect(header?.prefixed == false)
        #expect(command == getRandom)

        decoder.append([0x80, 0x01, 0, 0, 0, 4, 0, 0, 0, 0])
        let first = #expect(throws: DataChannelError.self) { try decoder.next(into: &command) }
        #expect(first?.code == .sizeTooSmall)
        #expect(first?.streamOffset == getRandom.count)
        let again = #expect(throws: DataChannelError.self) { try decoder.next(into: &command) }
        #expect(again == first)
    }

    @Test("the command buffer keeps its storage from one command to the next")
    func storageReused() throws {
        var decoder = DataChannelDecoder()
        var command: [UInt8] = []
        command.reserveCapacity(4096)
        let before = command.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
        for _ in 0..<100 {
            decoder.append(prefixedGetRandom[...])
            let header = try #require(try decoder.next(into: &command))
            #expect(header.locality == 3 && header.prefixed)
            #expect(command == getRandom)
        }
        #expect(command.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) } == before)
    }

    @Test("a response framed into a kept buffer is the framing encode() returns", arguments: [false, true])
    func framing(prefixed: Bool) {
        var out: [UInt8] = [9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]
        for response in [[0x80, 0x01, 0, 0, 0, 0x0a, 0, 0, 1, 1] as [UInt8], getRandom, []] {
            DataChannelResponse.encode(response, prefixed: prefixed, into: &out)
            #expect(out == DataChannelResponse.encode(response, prefixed: prefixed))
        }
    }

    @Test("a poll set reports the ready descriptor by its index, after being refilled")
    func pollSet() throws {
        let path = "/tmp/gv-pollset-\(getpid()).sock"
        let listener = try StreamSocket.listen(.unix(path: path))
        defer { listener.close(); _ = unlink(path) }
        let client = try StreamSocket.connect(.unix(path: path))
        let server = try listener.accept()
        var set = PollSet()
        for round in 0..<3 {
            set.removeAll()
            let quiet = set.add(listener.descriptor)
            let connection = set.add(server.descriptor)
            #expect(try set.wait(timeout: 0) == 0)
            #expect(!set.isReady(quiet) && !set.isReady(connection))
            try client.send([UInt8(round)])
            #expect(try set.wait(timeout: -1) == 1)
            #expect(set.isReady(connection) && !set.isReady(quiet))
            #expect(!set.isReady(-1) && !set.isReady(2))
            #expect(try server.receive() == [UInt8(round)])
        }
    }

    /// The data path keeps one decoder for the data connection; a connection that ends in
    /// the middle of a command must not leave its bytes to the next one (the decoder is
    /// the new connection's own, whatever address its object got).
    @Test("a data connection that ends mid-command leaves nothing to the next connection")
    func nextConnectionStartsClean() throws {
        let dir = TemporaryDirectory("serve-data-path")
        let vault = dir.file("vault"), state = dir.file("vm.state")
        #expect(try Run.guestvault(["vault", "init", "--vault", vault]).status == 0)
        let created = try Run.guestvault(["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", state])
        try #require(created.status == 0, "\(created.stderr)")
        let server = try ServedTPM(vault: vault, state: state)
        for round in 0..<20 {
            let broken = try StreamSocket.connect(server.dataAddress)
            // Seven of GetRandom's twelve bytes, then the connection goes away.
            try broken.send(Array(getRandom.prefix(7 + round % 4)))
            broken.close()
            let data = try StreamSocket.connect(server.dataAddress)
            try data.setTimeout(seconds: 30)
            try data.send(getRandom)
            var response: [UInt8] = []
            while response.count < 10 || response.count < Int(UInt32(bigEndianBytes: response[2..<6]) ?? 0) {
                let piece = try data.receive()
                try #require(!piece.isEmpty, "the server closed the new data connection (round \(round))")
                response += piece
            }
            #expect(Array(response[0..<2]) == [0x80, 0x01])
            #expect(UInt32(bigEndianBytes: response[6..<10]) == 0, "round \(round): response code of GetRandom")
            #expect(response.count == 10 + 2 + 8, "round \(round): GetRandom(8) answered with \(response.count) bytes")
            data.close()
        }
        #expect(server.terminate() == 0)
    }
}
