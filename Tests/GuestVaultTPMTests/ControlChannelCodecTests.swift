import GuestVaultCore
import GuestVaultTestSupport
import Testing
import GuestVaultTPM

// Requests and replies of swtpm's control channel. The request bytes are assembled by hand
// from the struct layouts in swtpm's tpm_ioctl.h, big-endian, in the forms QEMU 7.2,
// swtpm_ioctl 0.7.1 and tpm2-tss 3.2 send them (several were checked against a
// `swtpm socket --log level=20` trace of those clients). The reply bytes are what swtpm
// 0.7.1 sends for the same request.

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

/// One request as a client sends it: the bytes of each write (each becomes one receive).
struct ControlSample: Sendable, CustomTestStringConvertible {
    let name: String
    let receives: [[UInt8]]
    let expected: ControlRequest

    init(_ name: String, _ receives: String..., expected: ControlRequest) {
        self.name = name
        self.receives = receives.map(hex)
        self.expected = expected
    }

    var wire: [UInt8] { receives.flatMap { $0 } }
    var testDescription: String { name }
}

private let controlSamples: [ControlSample] = [
    .init("GET_CAPABILITY", "00000001", expected: .getCapability),
    .init("INIT at boot (QEMU)", "00000002 00000000", expected: .initialize(flags: [])),
    .init("INIT after migration (QEMU), swtpm_ioctl -i, tpm2-tss reset",
          "00000002 00000001", expected: .initialize(flags: .deleteVolatile)),
    .init("SHUTDOWN", "00000003", expected: .shutdown),
    .init("GET_TPMESTABLISHED", "00000004", expected: .getTPMEstablished),
    .init("SET_LOCALITY 0 (QEMU, padded to 4 bytes)", "00000005 00 000000", expected: .setLocality(0)),
    .init("SET_LOCALITY 3 (QEMU, padded)", "00000005 03 000000", expected: .setLocality(3)),
    .init("SET_LOCALITY 0 (tpm2-tss)", "00000005 00", expected: .setLocality(0)),
    .init("SET_LOCALITY 3 (swtpm_ioctl -l 3)", "00000005 03", expected: .setLocality(3)),
    .init("SET_LOCALITY 7 (decoded; the server answers TPM_BAD_LOCALITY)", "00000005 07",
          expected: .setLocality(7)),
    .init("HASH_START", "00000006", expected: .hashStart),
    .init("HASH_DATA abc (swtpm_ioctl -h abc)", "00000007 00000003 616263",
          expected: .hashData([0x61, 0x62, 0x63])),
    .init("HASH_DATA empty", "00000007 00000000", expected: .hashData([])),
    .init("HASH_DATA 4096 bytes", "00000007 00001000" + String(repeating: "5a", count: 4096),
          expected: .hashData([UInt8](repeating: 0x5a, count: 4096))),
    .init("HASH_END", "00000008", expected: .hashEnd),
    .init("CANCEL_TPM_CMD", "00000009", expected: .cancelTPMCommand),
    .init("STORE_VOLATILE", "0000000a", expected: .storeVolatile),
    .init("RESET_TPMESTABLISHED 3 (swtpm_ioctl -r 3)", "0000000b 03",
          expected: .resetTPMEstablished(locality: 3)),
    .init("RESET_TPMESTABLISHED 0 (QEMU, 3 uninitialised padding bytes)", "0000000b 00 a5a5a5",
          expected: .resetTPMEstablished(locality: 0)),
    .init("GET_STATEBLOB permanent, decrypted (QEMU)", "0000000c 00000001 00000001 00000000",
          expected: .getStateBlob(type: .permanent, flags: .decrypted, offset: 0)),
    .init("GET_STATEBLOB volatile, decrypted (QEMU)", "0000000c 00000001 00000002 00000000",
          expected: .getStateBlob(type: .volatile, flags: .decrypted, offset: 0)),
    .init("GET_STATEBLOB savestate, decrypted (QEMU)", "0000000c 00000001 00000003 00000000",
          expected: .getStateBlob(type: .savestate, flags: .decrypted, offset: 0)),
    .init("GET_STATEBLOB permanent at offset 0x520", "0000000c 00000000 00000001 00000520",
          expected: .getStateBlob(type: .permanent, flags: [], offset: 0x520)),
    .init("GET_STATEBLOB unknown type 9 (decoded; the server refuses it)",
          "0000000c 00000001 00000009 00000000",
          expected: .getStateBlob(type: PTMBlobType(rawValue: 9), flags: .decrypted, offset: 0)),
    .init("SET_STATEBLOB permanent (QEMU: header write, then blob write)",
          "0000000d 00000000 00000001 00000005", "0201000a00",
          expected: .setStateBlob(type: .permanent, flags: [], blob: [0x02, 0x01, 0x00, 0x0a, 0x00])),
    .init("SET_STATEBLOB volatile encrypted (one write)",
          "0000000d 00000002 00000002 00000003 aabbcc",
          expected: .setStateBlob(type: .volatile, flags: .encrypted, blob: [0xaa, 0xbb, 0xcc])),
    .init("SET_STATEBLOB savestate, blob in three pieces",
          "0000000d 00000000", "00000003 00000004 01", "0203", "04",
          expected: .setStateBlob(type: .savestate, flags: [], blob: [1, 2, 3, 4])),
    .init("SET_STATEBLOB empty blob", "0000000d 00000000 00000001 00000000",
          expected: .setStateBlob(type: .permanent, flags: [], blob: [])),
    .init("STOP", "0000000e", expected: .stop),
    .init("GET_CONFIG", "0000000f", expected: .getConfig),
    .init("SET_DATAFD (fd in SCM_RIGHTS beside it)", "00000010", expected: .setDataFD),
    .init("SET_BUFFERSIZE query (QEMU)", "00000011 00000000", expected: .setBufferSize(0)),
    .init("SET_BUFFERSIZE 4096 (QEMU)", "00000011 00001000", expected: .setBufferSize(4096)),
    .init("GET_INFO specification (swtpm_ioctl --info 1)",
          "00000012 0000000000000001 00000000 00000000",
          expected: .getInfo(flags: .tpmSpecification, offset: 0)),
    .init("GET_INFO both at offset 10", "00000012 0000000000000003 0000000a 00000000",
          expected: .getInfo(flags: [.tpmSpecification, .tpmAttributes], offset: 10)),
    .init("GET_INFO high flag bits, nonzero padding",
          "00000012 8000000000000002 00000000 ffffffff",
          expected: .getInfo(flags: PTMInfoFlags(rawValue: 0x8000_0000_0000_0002), offset: 0)),
    .init("LOCK_STORAGE 300 retries (QEMU 8+)", "00000013 0000012c", expected: .lockStorage(retries: 300)),
]

/// Feeds the receives and collects what the decoder returns.
private func decodeAll(_ receives: [[UInt8]], maximumMessage: Int = ControlDecoder.defaultMaximumMessage)
    throws(ControlChannelError) -> [ControlRequest] {
    var decoder = ControlDecoder(maximumMessage: maximumMessage)
    var out: [ControlRequest] = []
    for receive in receives {
        decoder.append(receive)
        while let request = try decoder.next() { out.append(request) }
    }
    try decoder.finish()
    return out
}

@Suite("ControlChannelCodec: requests")
struct ControlChannelRequestTests {
    @Test("every command decodes from the bytes its clients send", arguments: controlSamples)
    func decodesSample(_ sample: ControlSample) throws {
        #expect(try decodeAll(sample.receives) == [sample.expected])
    }

    @Test("every command code of swtpm's header is known")
    func commandCodes() {
        #expect(ControlCommand.allCases.map(\.rawValue) == Array(1...0x13))
        #expect(ControlCommand.getStateBlob.rawValue == 0x0c)
        #expect(ControlCommand.setStateBlob.rawValue == 0x0d)
        #expect(ControlCommand.stop.rawValue == 0x0e)
        #expect(ControlCommand.getConfig.rawValue == 0x0f)
        #expect(ControlCommand.setDataFD.rawValue == 0x10)
        #expect(ControlCommand.setBufferSize.rawValue == 0x11)
        #expect(ControlCommand.getInfo.rawValue == 0x12)
        #expect(ControlCommand.lockStorage.rawValue == 0x13)
        #expect(ControlCommand.setDataFD.description == "CMD_SET_DATAFD (0x00000010)")
        let covered = Set(controlSamples.map(\.expected.command))
        #expect(covered == Set(ControlCommand.allCases))
    }

    @Test("encoded() writes the shortest client form, and it decodes back", arguments: controlSamples)
    func roundTrip(_ sample: ControlSample) throws {
        let wire = sample.expected.encoded()
        #expect(try decodeAll([wire]) == [sample.expected])
        #expect(wire.count <= sample.wire.count)
    }

    @Test("byte-by-byte feeding gives nil until the last byte", arguments: controlSamples)
    func byteByByte(_ sample: ControlSample) throws {
        let wire = sample.expected.encoded()
        var decoder = ControlDecoder()
        for (index, byte) in wire.enumerated() {
            decoder.append([byte])
            let request = try decoder.next()
            if index < wire.count - 1 {
                #expect(request == nil, "complete after \(index + 1) of \(wire.count) bytes")
            } else {
                #expect(request == sample.expected)
            }
        }
        #expect(try decoder.next() == nil)
        #expect(decoder.bufferedByteCount == 0)
        try decoder.finish()
    }

    @Test("a request cut at every length needs more bytes, and is truncated at the end",
          arguments: controlSamples)
    func truncation(_ sample: ControlSample) throws {
        let wire = sample.expected.encoded()
        for length in 0..<wire.count {
            var decoder = ControlDecoder()
            decoder.append(Array(wire.prefix(length)))
            #expect(try decoder.next() == nil)
            if length == 0 {
                try decoder.finish()
                continue
            }
            let error = #expect(throws: ControlChannelError.self) { try decoder.finish() }
            #expect(error?.code == .truncated)
            #expect(error?.offset == length)
            #expect(error?.reply == nil)
            if length >= 4 { #expect(error?.command == sample.expected.command) }
        }
    }

    @Test("QEMU's startup, as traced with QEMU 7.2 and swtpm 0.7.1, one receive a write")
    func qemuStartupSession() throws {
        let receives = [
            "00000010", "00000001", "0000000e", "00000011 00000000", "0000000e",
            "00000011 00001000", "00000002 00000000", "00000004", "00000005 00000000",
            "00000005 00000000", "00000003",
        ].map(hex)
        #expect(try decodeAll(receives) == [
            .setDataFD, .getCapability, .stop, .setBufferSize(0), .stop, .setBufferSize(4096),
            .initialize(flags: []), .getTPMEstablished, .setLocality(0), .setLocality(0), .shutdown,
        ])
    }

    @Test("QEMU's incoming migration: STOP, SET_STATEBLOB header and blob as two writes, INIT")
    func qemuIncomingMigration() throws {
        let permanent = [UInt8](repeating: 0x11, count: 0x529)
        let volatile = [UInt8](repeating: 0x22, count: 0x2334)
        let receives = [
            hex("0000000e"),
            hex("0000000d 00000000 00000001 00000529"), permanent,
            hex("0000000d 00000000 00000002 00002334"), Array(volatile.prefix(4000)),
            Array(volatile.dropFirst(4000)),
            hex("00000002 00000001"),
        ]
        #expect(try decodeAll(receives) == [
            .stop,
            .setStateBlob(type: .permanent, flags: [], blob: permanent),
            .setStateBlob(type: .volatile, flags: [], blob: volatile),
            .initialize(flags: .deleteVolatile),
        ])
    }

    @Test("padding of QEMU's SET_LOCALITY stays with it when it arrives in pieces")
    func paddingAcrossReceives() throws {
        // swtpm reads on until it has 5 bytes; the rest of that read belongs to the request.
        #expect(try decodeAll([hex("000000"), hex("05 02 000000")]) == [.setLocality(2)])
        #expect(try decodeAll([hex("00000005"), hex("01 000000"), hex("00000004")])
                == [.setLocality(1), .getTPMEstablished])
    }

    @Test("bytes a command ignores are allowed after it in the same receive")
    func laxTrailingBytes() throws {
        // swtpm 0.7.1 answers `00000001 ffff` with its capabilities.
        #expect(try decodeAll([hex("00000001 ffff")]) == [.getCapability])
        #expect(try decodeAll([hex("00000010 00000000")]) == [.setDataFD])
        #expect(try decodeAll([hex("0000000c 00000001 00000001 00000000 00")])
                == [.getStateBlob(type: .permanent, flags: .decrypted, offset: 0)])
        #expect(try decodeAll([hex("00000011 00001000 0000")]) == [.setBufferSize(4096)])
    }

    @Test("unknown command codes are refused with TPM_BAD_ORDINAL",
          arguments: [0x0000_0000, 0x0000_0014, 0x0000_00ff, 0x0000_0100, 0x0100_0000, 0xffff_ffff] as [UInt32])
    func unknownCommand(_ code: UInt32) throws {
        var decoder = ControlDecoder()
        decoder.append([UInt8(code >> 24), UInt8(code >> 16 & 0xff), UInt8(code >> 8 & 0xff), UInt8(code & 0xff)])
        let error = #expect(throws: ControlChannelError.self) { try decoder.next() }
        #expect(error?.code == .unknownCommand)
        #expect(error?.commandCode == code)
        #expect(error?.command == nil)
        #expect(error?.offset == 0)
        #expect(error?.reply == .badOrdinal)
        #expect(ControlResponse.result(error?.reply ?? .success).encoded() == hex("0000000a"))
    }

    @Test("extra bytes after a request swtpm sizes exactly are refused with TPM_BAD_PARAMETER",
          arguments: [
            "0000000f 00",                          // GET_CONFIG with a byte
            "0000000e 00000000",                    // STOP with a word
            "00000002 00000000 00",                 // INIT with 5 payload bytes
            "00000007 00000002 616263",             // HASH_DATA with more data than its length
            "0000000d 00000000 00000001 00000001 aabb", // SET_STATEBLOB with more than its length
          ])
    func exactTrailingBytes(_ text: String) throws {
        var decoder = ControlDecoder()
        decoder.append(hex(text))
        let error = #expect(throws: ControlChannelError.self) { try decoder.next() }
        #expect(error?.code == .malformed)
        #expect(error?.reply == .badParameter)
        #expect(error.map { hex(text).count > $0.offset } == true)
    }

    @Test("HASH_DATA over swtpm's 4096-byte buffer is refused as soon as its length arrives")
    func hashDataOverLimit() throws {
        var decoder = ControlDecoder()
        decoder.append(hex("00000007 00001001"))
        let error = #expect(throws: ControlChannelError.self) { try decoder.next() }
        #expect(error?.code == .lengthOverLimit)
        #expect(error?.command == .hashData)
        #expect(error?.offset == 4)
        #expect(error?.reply == .badParameter)
        #expect(error?.description.contains("CMD_HASH_DATA") == true)
    }

    @Test("SET_STATEBLOB over the cap is refused as soon as its length arrives",
          arguments: [0xffff_ffff, 0x8000_0000, UInt32(4 * 1024 * 1024 + 1)] as [UInt32])
    func stateBlobOverLimit(_ length: UInt32) throws {
        var decoder = ControlDecoder()
        var wire = hex("0000000d 00000000 00000001")
        wire += [UInt8(length >> 24), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff)]
        decoder.append(wire)
        let error = #expect(throws: ControlChannelError.self) { try decoder.next() }
        #expect(error?.code == .lengthOverLimit)
        #expect(error?.command == .setStateBlob)
        #expect(error?.offset == 12)
        #expect(error?.reply == .fail)
    }

    @Test("the cap follows maximumMessage: a blob of exactly the cap passes, one more byte fails")
    func smallerCap() throws {
        let maximum = ControlDecoder.smallestMaximumMessage
        let fits = ControlRequest.setStateBlob(type: .permanent, flags: [],
                                               blob: [UInt8](repeating: 7, count: maximum - 16))
        #expect(try decodeAll([fits.encoded()], maximumMessage: maximum) == [fits])
        let over = ControlRequest.setStateBlob(type: .permanent, flags: [],
                                               blob: [UInt8](repeating: 7, count: maximum - 15))
        let error = #expect(throws: ControlChannelError.self) {
            try decodeAll([over.encoded()], maximumMessage: maximum)
        }
        #expect(error?.code == .lengthOverLimit)
        // A huge receive after a request that allows trailing bytes is refused too.
        let tail = #expect(throws: ControlChannelError.self) {
            try decodeAll([hex("00000001") + [UInt8](repeating: 0, count: maximum)], maximumMessage: maximum)
        }
        #expect(tail?.code == .lengthOverLimit)
    }

    @Test("after an error the decoder stays failed")
    func staysFailed() throws {
        var decoder = ControlDecoder()
        decoder.append(hex("00000001"))
        #expect(try decoder.next() == .getCapability)
        decoder.append(hex("000000ff"))
        let first = #expect(throws: ControlChannelError.self) { try decoder.next() }
        #expect(first?.streamOffset == 4)
        decoder.append(hex("00000001"))
        let again = #expect(throws: ControlChannelError.self) { try decoder.next() }
        #expect(again == first)
        #expect(throws: ControlChannelError.self) { try decoder.finish() }
    }

    @Test("errors name the command, the byte and the stream offset")
    func errorDescription() throws {
        var decoder = ControlDecoder()
        decoder.append(hex("0000000e"))
        _ = try decoder.next()
        decoder.append(hex("0000000f 01"))
        let error = #expect(throws: ControlChannelError.self) { try decoder.next() }
        #expect(error?.description ==
                "control channel: CMD_GET_CONFIG (0x0000000f) at stream offset 4, byte 4: "
                + "1 bytes follow the 4-byte request in the same receive")
    }

    @Test("random bytes never crash the decoder (seeded, bounded)")
    func randomBytes() {
        var random = SplitMix64(state: 0x6775_6573_7476_6175)
        for _ in 0..<4000 {
            var wire: [UInt8] = (0..<Int.random(in: 0...48, using: &random)).map { _ in
                UInt8.random(in: 0...255, using: &random)
            }
            // Often start with a known command so the payload paths run too.
            if wire.count >= 4, Bool.random(using: &random) {
                wire[0] = 0; wire[1] = 0; wire[2] = 0
                wire[3] = UInt8.random(in: 0...0x14, using: &random)
            }
            if wire.count >= 16, Bool.random(using: &random) {
                // A small length field for HASH_DATA (offset 4) or SET_STATEBLOB (offset 12).
                let at = Bool.random(using: &random) ? 4 : 12
                wire[at] = 0; wire[at + 1] = 0; wire[at + 2] = 0
                wire[at + 3] = UInt8.random(in: 0...40, using: &random)
            }
            var decoder = ControlDecoder(maximumMessage: ControlDecoder.smallestMaximumMessage)
            var rest = wire[...]
            while !rest.isEmpty {
                let piece = rest.prefix(Int.random(in: 1...8, using: &random))
                rest = rest.dropFirst(piece.count)
                decoder.append(Array(piece))
                do {
                    while let request = try decoder.next() {
                        // A request never claims more bytes than were sent.
                        #expect(request.encoded().count <= wire.count)
                    }
                } catch {
                    #expect(error.reply != nil)
                    break
                }
            }
            _ = try? decoder.finish()
        }
    }

    @Test("mutated valid requests never crash the decoder (seeded, bounded)")
    func mutatedRequests() {
        var random = SplitMix64(state: 42)
        for _ in 0..<3000 {
            var wire = controlSamples.randomElement(using: &random)!.expected.encoded()
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                switch Int.random(in: 0...2, using: &random) {
                case 0 where !wire.isEmpty:
                    wire[Int.random(in: 0..<wire.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                case 1:
                    wire.removeLast(Int.random(in: 0...wire.count, using: &random))
                default:
                    wire += (0..<Int.random(in: 1...6, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
                }
            }
            _ = try? decodeAll([wire])
        }
    }
}

@Suite("ControlChannelCodec: replies")
struct ControlChannelReplyTests {
    @Test("every reply encodes to the bytes swtpm 0.7.1 sends", arguments: [
        (ControlResponse.result(.success), "00000000"),
        (.result(.badParameter), "00000003"),
        (.result(.fail), "00000009"),
        (.result(.badOrdinal), "0000000a"),
        (.result(.ioError), "0000001f"),
        (.result(.badLocality), "0000003d"),
        (.capabilities(.swtpm071TPM2), "00000000 0000ffff"),
        (.capabilities(PTMCapabilities.swtpm071TPM2.union(.lockStorage)), "00000000 0001ffff"),
        (.tpmEstablished(result: .success, established: false), "00000000 00 000000"),
        (.tpmEstablished(result: .success, established: true), "00000000 01 000000"),
        (.stateBlob(result: .success, flags: [], data: [1, 2, 3, 4, 5]),
         "00000000 00000000 00000005 00000005 0102030405"),
        (.stateBlob(result: .success, flags: .encrypted, data: [9]), "00000000 00000002 00000001 00000001 09"),
        (.stateBlob(result: .retry, flags: [], data: []), "00000800 00000000 00000000 00000000"),
        (.stateBlob(result: .fail, flags: [], data: [1, 2]), "00000009 00000000 00000000 00000000"),
        (.config(result: .success, flags: []), "00000000 00000000"),
        (.config(result: .success, flags: [.fileKey, .migrationKey]), "00000000 00000003"),
        (.bufferSize(result: .success, size: 4096, minimum: 2808, maximum: 4096),
         "00000000 00001000 00000af8 00001000"),
        (.bufferSize(result: .success, size: 2808, minimum: 2808, maximum: 4096),
         "00000000 00000af8 00000af8 00001000"),
        (.info(result: .success, totalLength: 3, chunk: [0x7b, 0x7d, 0]), "00000000 00000003 00000003 7b7d00"),
    ] as [(ControlResponse, String)])
    func encodes(_ response: ControlResponse, _ expected: String) {
        #expect(response.encoded() == hex(expected))
    }

    @Test("the capabilities of swtpm 0.7.1 for a TPM 2.0 are 0xffff and include QEMU's needs")
    func capabilities() {
        #expect(PTMCapabilities.swtpm071TPM2.rawValue == 0xffff)
        #expect(PTMCapabilities.swtpm071TPM2.isSuperset(of: .qemuRequiredTPM2))
        #expect(PTMCapabilities.swtpm071TPM2.isSuperset(of: .qemuMigration))
        #expect(!PTMCapabilities.swtpm071TPM2.contains(.lockStorage))
        #expect(PTMCapabilities.sendCommandHeader.rawValue == 0x8000)
    }

    @Test("GET_STATEBLOB sends everything from the offset in one reply")
    func stateBlobOffsets() {
        let blob: [UInt8] = Array(0..<10)
        #expect(ControlResponse.stateBlob(result: .success, flags: [], blob: blob, offset: 0).encoded()
                == hex("00000000 00000000 0000000a 0000000a 00010203040506070809"))
        #expect(ControlResponse.stateBlob(result: .success, flags: [], blob: blob, offset: 7).encoded()
                == hex("00000000 00000000 00000003 00000003 070809"))
        #expect(ControlResponse.stateBlob(result: .success, flags: [], blob: blob, offset: 10).encoded()
                == hex("00000000 00000000 00000000 00000000"))
        #expect(ControlResponse.stateBlob(result: .success, flags: [], blob: blob, offset: .max).encoded()
                == hex("00000000 00000000 00000000 00000000"))
    }

    @Test("GET_INFO: the text with its NUL, from the offset; an offset at the end is refused")
    func info() {
        let specification = #"{"TPMSpecification":{"family":"2.0","level":0,"revision":164}}"#
        let text = Array(specification.utf8)
        #expect(text.count == 62)
        // swtpm 0.7.1 with libtpms 0.9.2: `swtpm_ioctl --info 1`, 75 bytes.
        let whole = ControlResponse.info(text: specification, offset: 0).encoded()
        #expect(whole == hex("00000000 0000003f 0000003f") + text + [0])
        #expect(whole.count == 75)
        #expect(ControlResponse.info(text: specification, offset: 10).encoded()
                == hex("00000000 0000003f 00000035") + text.dropFirst(10) + [0])
        #expect(ControlResponse.info(text: specification, offset: 61).encoded() == hex("00000000 0000003f 00000002 7d00"))
        #expect(ControlResponse.info(text: specification, offset: 62).encoded() == hex("00000003"))
        #expect(ControlResponse.info(text: "{}", offset: 0).encoded() == hex("00000000 00000003 00000003 7b7d00"))
        #expect(ControlResponse.info(text: "", offset: 0) == .result(.badParameter))
    }

    @Test("GET_INFO sends at most 3 KiB a reply")
    func infoChunks() {
        let text = String(repeating: "x", count: 4000)
        guard case .info(let result, let total, let chunk) = ControlResponse.info(text: text, offset: 0) else {
            Issue.record("not an info reply"); return
        }
        #expect(result == .success)
        #expect(total == 4001)
        #expect(chunk.count == ControlChannelLimits.maximumInfoChunk)
        guard case .info(_, _, let last) = ControlResponse.info(text: text, offset: 3072) else {
            Issue.record("not an info reply"); return
        }
        #expect(last.count == 4001 - 3072)
        #expect(last.last == 0)
    }

    @Test("result codes have swtpm's values and names")
    func results() {
        #expect(PTMResult.retry.isNonFatal)
        #expect(!PTMResult.fail.isNonFatal)
        #expect(PTMResult.badOrdinal.description == "TPM_BAD_ORDINAL")
        #expect(PTMResult(rawValue: 0x123).description == "0x00000123")
        #expect(PTMBlobType.savestate.isKnown && !PTMBlobType(rawValue: 0).isKnown)
    }
}
