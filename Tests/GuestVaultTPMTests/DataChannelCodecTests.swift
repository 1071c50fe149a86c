import GuestVaultCore
import Testing
import GuestVaultTPM

// Framing of swtpm's data channel: raw TPM 2.0 commands and the MSSIM-style
// TPM_SEND_COMMAND prefix. The response bytes in these tests are what swtpm 0.7.1 sent for
// the same requests.

/// Hex to bytes; spaces and `|` are for reading only.
private func hex(_ text: String) -> [UInt8] {
    let digits = text.filter { $0.isHexDigit }
    precondition(digits.count % 2 == 0, "odd number of hex digits in \(text)")
    var out: [UInt8] = []
    var index = digits.startIndex
    while index < digits.endIndex {
        let next = digits.index(index, offsetBy: 2)
        out.append(UInt8(digits[index..<next], radix: 16)!)
        index = next
    }
    return out
}

private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// TPM2_GetRandom(8), as tpm2_getrandom sends it.
private let getRandom = hex("8001 0000000c 0000017b 0008")
/// TPM2_ReadClock, QEMU's probe on a new data channel.
private let readClock = hex("8001 0000000a 00000181")
/// TPM_GetTicks of TPM 1.2 (QEMU probes with it when the TPM 2 probe fails).
private let getTicks = hex("00c1 0000000a 000000f1")
/// GetRandom with the prefix, at locality 3.
private let prefixedGetRandom = hex("00000008 03 0000000c") + getRandom

private func frames(_ receives: [[UInt8]], maximum: Int = DataChannelDecoder.defaultMaximumCommandSize)
    throws(DataChannelError) -> [TPMCommandFrame] {
    var decoder = DataChannelDecoder(maximumCommandSize: maximum)
    var out: [TPMCommandFrame] = []
    for receive in receives {
        decoder.append(receive)
        while let frame = try decoder.next() { out.append(frame) }
    }
    try decoder.finish()
    return out
}

@Suite("DataChannelCodec")
struct DataChannelCodecTests {
    @Test("a raw TPM 2.0 command is read by its size field")
    func raw() throws {
        let decoded = try frames([getRandom])
        #expect(decoded.count == 1)
        let frame = try #require(decoded.first)
        #expect(frame.bytes == getRandom)
        #expect(frame.locality == nil)
        #expect(!frame.prefixed)
        #expect(frame.tag == 0x8001)
        #expect(frame.declaredSize == 12)
        #expect(frame.commandCode == 0x17b)
    }

    @Test("a raw command with sessions (tag 0x8002)")
    func rawWithSessions() throws {
        // TPM2_PCR_Extend-shaped: handle, authorization size, password session, no digests.
        let command = hex("8002 0000001b 00000182 | 00000000 | 00000009 40000009 0000 00 0000")
        #expect(command.count == 0x1b)
        #expect(try frames([command]).map(\.bytes) == [command])
    }

    @Test("QEMU's probes: TPM2_ReadClock, and TPM 1.2 TPM_GetTicks framed for the TPM to refuse")
    func probes() throws {
        let decoded = try frames([readClock, getTicks])
        #expect(decoded.map(\.bytes) == [readClock, getTicks])
        #expect(decoded.map(\.prefixed) == [false, false])
        #expect(decoded.map(\.tag) == [0x8001, 0x00c1])
    }

    @Test("a prefixed command carries its locality and is answered framed")
    func prefixed() throws {
        let frame = try #require(try frames([prefixedGetRandom]).first)
        #expect(frame.bytes == getRandom)
        #expect(frame.locality == 3)
        #expect(frame.prefixed)
        // swtpm 0.7.1's answer to this request (TPM_RC_INITIALIZE, the TPM had no Startup).
        let response = hex("8001 0000000a 00000100")
        #expect(frame.encodeResponse(response) == hex("0000000a | 8001 0000000a 00000100 | 00000000"))
    }

    @Test("raw responses go back unchanged")
    func rawResponse() throws {
        let frame = try #require(try frames([getRandom]).first)
        let response = hex("8001 00000014 00000000 0008 5e6c824a17f8205a")
        #expect(frame.encodeResponse(response) == response)
        #expect(DataChannelResponse.encode(response, prefixed: false) == response)
    }

    @Test("the error response of a stopped TPM, raw and prefixed, as swtpm sends it")
    func failureResponse() {
        let failure = DataChannelResponse.error(DataChannelResponse.failureResponseCode)
        #expect(failure == hex("8001 0000000a 00000101"))
        #expect(DataChannelResponse.encode(failure, prefixed: true)
                == hex("0000000a 8001 0000000a 00000101 00000000"))
    }

    @Test("byte-by-byte feeding gives nil until the last byte",
          arguments: [getRandom, readClock, getTicks, prefixedGetRandom])
    func byteByByte(_ wire: [UInt8]) throws {
        var decoder = DataChannelDecoder()
        for (index, byte) in wire.enumerated() {
            decoder.append([byte])
            let frame = try decoder.next()
            if index < wire.count - 1 {
                #expect(frame == nil, "complete after \(index + 1) of \(wire.count) bytes")
            } else {
                #expect(frame?.bytes == (wire == prefixedGetRandom ? getRandom : wire))
            }
        }
        try decoder.finish()
    }

    @Test("back-to-back commands split at every point come out whole and in order")
    func splits() throws {
        let stream = getRandom + prefixedGetRandom + readClock
        for cut in 0...stream.count {
            let decoded = try frames([Array(stream.prefix(cut)), Array(stream.dropFirst(cut))])
            #expect(decoded.map(\.bytes) == [getRandom, getRandom, readClock])
            #expect(decoded.map(\.prefixed) == [false, true, false])
            #expect(decoded.map(\.locality) == [nil, 3, nil])
        }
    }

    @Test("a command cut at every length is truncated at the end of the stream",
          arguments: [getRandom, prefixedGetRandom])
    func truncation(_ wire: [UInt8]) throws {
        for length in 0..<wire.count {
            var decoder = DataChannelDecoder()
            decoder.append(Array(wire.prefix(length)))
            #expect(try decoder.next() == nil)
            if length == 0 {
                try decoder.finish()   // tpm2-tss connects and closes as a check
                continue
            }
            let error = #expect(throws: DataChannelError.self) { try decoder.finish() }
            #expect(error?.code == .truncated)
            #expect(error?.offset == length)
        }
    }

    @Test("sizes below the 10-byte header are refused", arguments: [
        ("8001 00000009 00000000", false, 2),
        ("8001 00000000 0000", false, 2),
        ("00000008 00 00000000", true, 5),     // swtpm 0.7 ignores this length; we refuse it
        ("00000008 00 00000009 8001000000090000017b", true, 5),
    ] as [(String, Bool, Int)])
    func tooSmall(_ text: String, _ prefixed: Bool, _ offset: Int) throws {
        var decoder = DataChannelDecoder()
        decoder.append(hex(text))
        let error = #expect(throws: DataChannelError.self) { try decoder.next() }
        #expect(error?.code == .sizeTooSmall)
        #expect(error?.prefixed == prefixed)
        #expect(error?.offset == offset)
    }

    @Test("sizes over the buffer size are refused as soon as the size arrives", arguments: [
        ("8001 00001001", false),
        ("8001 ffffffff", false),
        ("00000008 00 00001001", true),
        ("01020304 0506 0708090a0b", false),   // garbage: tag 0x0102, size 0x03040506
        ("474554202f20485454502f312e310d0a", false),   // an HTTP request
    ] as [(String, Bool)])
    func tooLarge(_ text: String, _ prefixed: Bool) throws {
        var decoder = DataChannelDecoder()
        decoder.append(hex(text))
        let error = #expect(throws: DataChannelError.self) { try decoder.next() }
        #expect(error?.code == .sizeOverLimit)
        #expect(error?.prefixed == prefixed)
        let expected = DataChannelResponse.error(DataChannelResponse.commandSizeResponseCode)
        #expect(error?.errorResponse == DataChannelResponse.encode(expected, prefixed: prefixed))
        #expect(expected == hex("8001 0000000a 00000142"))
    }

    @Test("the limit follows the negotiated buffer size")
    func negotiatedLimit() throws {
        var decoder = DataChannelDecoder()
        decoder.maximumCommandSize = 2808
        let fits = hex("8001 00000af8 0000017b") + [UInt8](repeating: 0, count: 2808 - 10)
        decoder.append(fits)
        #expect(try decoder.next()?.bytes == fits)
        decoder.append(hex("8001 00000af9 0000017b"))
        let error = #expect(throws: DataChannelError.self) { try decoder.next() }
        #expect(error?.code == .sizeOverLimit)
        #expect(error?.streamOffset == 2808)
        #expect(error?.description == "data channel: TPM command at stream offset 2808, byte 2: "
                + "command size 2809 is over the buffer size 2808")
    }

    @Test("after an error the decoder stays failed")
    func staysFailed() throws {
        var decoder = DataChannelDecoder()
        decoder.append(hex("8001 00000002 0000"))
        let first = #expect(throws: DataChannelError.self) { try decoder.next() }
        decoder.append(getRandom)
        let again = #expect(throws: DataChannelError.self) { try decoder.next() }
        #expect(first == again)
    }

    @Test("random bytes never crash the decoder (seeded, bounded)")
    func randomBytes() {
        var random = SplitMix64(state: 0x6461_7461)
        for _ in 0..<4000 {
            var wire: [UInt8] = (0..<Int.random(in: 0...40, using: &random)).map { _ in
                UInt8.random(in: 0...255, using: &random)
            }
            if wire.count >= 9, Bool.random(using: &random) {
                // A plausible header: raw size or prefix length between 0 and 40.
                if Bool.random(using: &random) {
                    wire[0] = 0x80; wire[1] = 0x01; wire[2] = 0; wire[3] = 0; wire[4] = 0
                    wire[5] = UInt8.random(in: 0...40, using: &random)
                } else {
                    wire[0] = 0; wire[1] = 0; wire[2] = 0; wire[3] = 8
                    wire[5] = 0; wire[6] = 0; wire[7] = 0
                    wire[8] = UInt8.random(in: 0...40, using: &random)
                }
            }
            var decoder = DataChannelDecoder(maximumCommandSize: 32)
            var rest = wire[...]
            decoding: while !rest.isEmpty {
                let piece = rest.prefix(Int.random(in: 1...7, using: &random))
                rest = rest.dropFirst(piece.count)
                decoder.append(Array(piece))
                do {
                    while let frame = try decoder.next() {
                        #expect(frame.bytes.count >= 10 && frame.bytes.count <= 32)
                    }
                } catch {
                    #expect(!error.errorResponse.isEmpty)
                    break decoding
                }
            }
            _ = try? decoder.finish()
        }
    }
}
