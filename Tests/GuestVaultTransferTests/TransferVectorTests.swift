import GuestVaultCore
import Dispatch
import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultTransfer
import GuestVaultTransferTesting
import Synchronization
import Testing

/// Vectors/formats/transfer: a whole sender → receiver exchange with fixed keys. Normal
/// runs check that the code still produces every byte, and that the real
/// `ContainerTransfer.receive` and `.send` exchange the same payloads with the vector's
/// other end. GUESTVAULT_WRITE_VECTORS=1 writes the files anew into the source tree.
@Suite struct TransferVectorTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let formats = packageRoot.appendingPathComponent("Vectors/formats")
    static let modes = ["recipient", "psk"]

    static func sequence(from start: Int) -> [UInt8] { (0..<32).map { UInt8(truncatingIfNeeded: start + $0) } }

    // MARK: Writing

    @Test(.enabled(if: ProcessInfo.processInfo.environment["GUESTVAULT_WRITE_VECTORS"] == "1"))
    func writeVectors() throws {
        let rootHex = try #require(Self.containerManifest()["rootKey"] as? String)
        let rootKey = try #require(bytes(fromHex: rootHex))
        let out = Self.formats.appendingPathComponent("transfer")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        for mode in Self.modes {
            let inputs = try Inputs.fixed(mode, sourceRoot: rootKey)
            let vector = try Self.record(inputs, description: mode == "recipient"
                ? "containers/basic.state sent to a receiver authenticated by its recipient key (docs/TRANSFER.md §2): a new transfer, no resume"
                : "containers/basic.state sent between two ends holding the same migration key (docs/TRANSFER.md §2): a new transfer, no resume")
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            try FileSystem.writeAtomically(Array(try encoder.encode(vector)) + [10],
                                           to: out.appendingPathComponent("transcript-\(mode).json").path, mode: 0o644)
        }
    }

    /// Records an exchange with `inputs` and states it as a vector.
    static func record(_ inputs: Inputs, description: String) throws -> TransferVector {
        let fixture = try Fixture(inputs)
        let transcript = try TranscriptRecorder.recordTranscript(
            source: fixture.source, senderAuthentication: inputs.senderAuthentication, sender: inputs.sender,
            receiverAuthentication: inputs.receiverAuthentication, receiver: inputs.receiver,
            receiverVault: fixture.receiverVault, destination: fixture.destination)
        var sequences: [TranscriptRecorder.Direction: UInt64] = [:]
        let messages = transcript.messages.enumerated().map { index, message -> TransferVector.Message in
            guard let frame = message.frame else {
                return .init(index: index, direction: message.direction.rawValue, kind: "hello", type: nil, sequence: nil, payload: nil,
                             transcript: nil, bytes: hexString(message.bytes))
            }
            let sequence = sequences[message.direction, default: 0]
            sequences[message.direction] = sequence + 1
            return .init(index: index, direction: message.direction.rawValue, kind: "frame", type: typeName(frame.type), sequence: sequence,
                         payload: hexString(frame.payload), transcript: frame.transcript.map { hexString($0) }, bytes: hexString(message.bytes))
        }
        let final = try #require(transcript.messages.last { $0.frame?.type == .final }?.frame)
        let source = fixture.source
        return TransferVector(
            description: description,
            source: "GuestVault docs/TRANSFER.md; written by Tests/GuestVaultTransferTests/TransferVectorTests.swift through Sources/GuestVaultTransfer/TranscriptRecorder.swift; checked by Vectors/tools/check_transfer_vectors.py",
            container: .init(file: "containers/basic.state", length: UInt64(source.bytes.count), sha256: hexString(try SHA256.hash(source.bytes)),
                             rootKey: hexString(inputs.sourceRoot.unsafeCopyOfBytes()), vm: source.vm.uuidString.lowercased(),
                             containerID: hexString(source.containerID), generation: source.generation, dek: hexString(source.dek.unsafeCopyOfBytes())),
            authentication: .init(mode: inputs.mode, recipientPrivate: inputs.recipient.map { hexString($0.rawRepresentation.unsafeCopyOfBytes()) },
                                  recipientPublic: inputs.recipient.map { hexString($0.publicKey.rawRepresentation) },
                                  senderPrivate: inputs.senderKey.map { hexString($0.rawRepresentation.unsafeCopyOfBytes()) },
                                  senderPublic: inputs.senderKey.map { hexString($0.publicKey.rawRepresentation) },
                                  psk: inputs.psk.map { hexString($0.unsafeCopyOfBytes()) }, keyID: hexString(transcript.keyID)),
            sender: end(inputs.sender), receiver: end(inputs.receiver),
            derived: .init(firstSecret: hexString(transcript.firstSecret), ephemeralShared: hexString(transcript.ephemeralShared),
                           handshakeHash: hexString(transcript.handshakeHash), senderToReceiverKey: hexString(transcript.senderToReceiverKey),
                           receiverToSenderKey: hexString(transcript.receiverToSenderKey), transferID: hexString(source.transferID),
                           prefixSHA256: hexString(final.payload[8..<40]), finalTranscript: hexString(final.payload[40..<72])),
            messages: messages,
            receiverCommit: .init(vaultRootKey: hexString(inputs.receiverRoot.unsafeCopyOfBytes()), generation: transcript.committedGeneration))
    }

    static func end(_ handshake: FixedHandshake) -> TransferVector.End {
        .init(ephemeralPrivate: hexString(handshake.ephemeral.rawRepresentation.unsafeCopyOfBytes()),
              ephemeralPublic: hexString(handshake.ephemeral.publicKey.rawRepresentation), random: hexString(handshake.random))
    }

    // MARK: Checking

    /// Vectors/tools/check_transfer_vectors.py, a receiver written from docs/TRANSFER.md
    /// on pyca/cryptography, takes both vectors: the document, the vectors and this code
    /// agree.
    @Test func theIndependentReaderWrittenFromTheDocsChecksTheVectors() throws {
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let python else {
            print("SKIPPED: no python3 on this machine (scripts/deps.sh --tests installs it); the transfer vectors were not checked by the Python reader")
            return
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [Self.packageRoot.appendingPathComponent("Vectors/tools/check_transfer_vectors.py").path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        if process.terminationStatus != 0 && text.contains("No module named 'cryptography'") {
            print("SKIPPED: python3 has no pyca/cryptography (scripts/deps.sh --tests installs python3-cryptography)")
            return
        }
        #expect(process.terminationStatus == 0, "check_transfer_vectors.py:\n\(text)")
        #expect(text.contains("2 of 2 transfer vectors check"), "\(text)")
        print("transfer vectors: \(text.split(separator: "\n").last ?? "")")
    }

    @Test(arguments: modes)
    func theCodeStillProducesEveryByteOfTheVector(_ mode: String) throws {
        let vector = try Self.load(mode)
        let recorded = try Self.record(try Inputs(vector), description: vector.description)
        #expect(recorded.container.sha256 == vector.container.sha256, "containers/basic.state changed")
        #expect(recorded.authentication.keyID == vector.authentication.keyID)
        #expect(recorded.sender.ephemeralPublic == vector.sender.ephemeralPublic)
        #expect(recorded.receiver.ephemeralPublic == vector.receiver.ephemeralPublic)
        let derived = (recorded.derived, vector.derived)
        #expect(derived.0.firstSecret == derived.1.firstSecret)
        #expect(derived.0.ephemeralShared == derived.1.ephemeralShared)
        #expect(derived.0.handshakeHash == derived.1.handshakeHash)
        #expect(derived.0.senderToReceiverKey == derived.1.senderToReceiverKey)
        #expect(derived.0.receiverToSenderKey == derived.1.receiverToSenderKey)
        #expect(derived.0.transferID == derived.1.transferID)
        #expect(derived.0.prefixSHA256 == derived.1.prefixSHA256)
        #expect(derived.0.finalTranscript == derived.1.finalTranscript)
        #expect(recorded.receiverCommit.generation == vector.receiverCommit.generation)
        try #require(recorded.messages.count == vector.messages.count)
        for (mine, theirs) in zip(recorded.messages, vector.messages) {
            #expect(mine.direction == theirs.direction && mine.type == theirs.type && mine.sequence == theirs.sequence,
                    "message \(theirs.index)")
            #expect(mine.payload == theirs.payload, "message \(theirs.index) (\(theirs.type ?? "hello")): payload")
            #expect(mine.transcript == theirs.transcript, "message \(theirs.index) (\(theirs.type ?? "hello")): transcript")
            #expect(mine.bytes == theirs.bytes, "message \(theirs.index) (\(theirs.type ?? "hello")): bytes")
        }
        print("transfer vectors: transcript-\(mode).json: \(vector.messages.count) messages reproduced byte for byte")
    }

    /// What one run of the vector's sender against the real receiver gave.
    struct Run {
        let received: Result<ContainerTransfer.Report, any Error>
        let sent: Result<[TranscriptRecorder.Frame], any Error>
        /// Every `send` of the sender, as it went out (after any flip).
        let senderMessages: [[UInt8]]
    }

    /// The vector's sender (fixed ephemeral key and random) against the real
    /// `ContainerTransfer.receive`, which draws its own. `flip` changes one byte of the
    /// sender's stream (hello included), counted from its first byte; `total` is the
    /// sender's whole stream, after which its direction is closed, so a stretched length
    /// ends in "truncated" rather than waiting.
    static func runAgainstRealReceiver(_ inputs: Inputs, _ fixture: Fixture, flip: Int? = nil, total: Int? = nil) -> Run {
        let messages = Mutex<[[UInt8]]>([])
        let (senderEnd, receiverEnd) = MemoryChannel.pair(observeFirst: { bytes in messages.withLock { $0.append(bytes) } })
        let channel = FlippingChannel(senderEnd, flip: flip, closeAfter: total)
        let senderResult = Mutex<Result<[TranscriptRecorder.Frame], any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let source = fixture.source, authentication = inputs.senderAuthentication, handshake = inputs.sender
        Thread.detachNewThread {
            let result = Result { try TranscriptRecorder.send(source, over: channel, authentication: authentication, handshake: handshake) }
            senderEnd.close()
            senderResult.withLock { $0 = result }
            done.signal()
        }
        let received = Result {
            try ContainerTransfer.receive(over: receiverEnd, into: fixture.destination, vault: fixture.receiverVault,
                                          authentication: inputs.receiverAuthentication)
        }
        receiverEnd.close()
        done.wait()
        return Run(received: received, sent: senderResult.withLock { $0! }, senderMessages: messages.withLock { $0 })
    }

    @Test(arguments: modes)
    func theRealReceiverTakesTheVectorsSenderAndCommits(_ mode: String) throws {
        let vector = try Self.load(mode)
        let inputs = try Inputs(vector)
        let fixture = try Fixture(inputs)
        let run = Self.runAgainstRealReceiver(inputs, fixture)
        let report = try run.received.get()
        let frames = try run.sent.get()

        // The receiver draws its own ephemeral key, so the session keys differ from the
        // vector's: the sender's hello is the vector's byte for byte, every frame has the
        // vector's header and plaintext (the final frame's transcript aside), and the
        // real receiver answers with the vector's replies.
        let expected = vector.messages.filter { $0.kind == "frame" }
        try #require(frames.count == expected.count, "\(frames.count) frames, the vector has \(expected.count)")
        #expect(hexString(run.senderMessages[0]) == vector.messages[0].bytes, "the sender's hello")
        let senderFrames = run.senderMessages.dropFirst()
        for (frame, theirs) in zip(frames, expected) {
            #expect(frame.direction.rawValue == theirs.direction && Self.typeName(frame.type) == theirs.type, "frame \(theirs.index)")
            let payload = hexString(frame.type == .final ? Array(frame.payload[0..<40]) : frame.payload)
            let theirPayload = theirs.type == "FINAL" ? String((theirs.payload ?? "").prefix(80)) : theirs.payload
            #expect(payload == theirPayload, "frame \(theirs.index) (\(theirs.type ?? "")): payload")
        }
        for (sent, theirs) in zip(senderFrames, expected.filter { $0.direction == "sender->receiver" }) {
            #expect(hexString(sent.prefix(16)) == String(theirs.bytes.prefix(32)), "frame \(theirs.index) (\(theirs.type ?? "")): header")
        }

        #expect(report.generation == vector.receiverCommit.generation)
        #expect(report.vm == UUID(uuidString: vector.container.vm))
        #expect(report.bytes == vector.container.length && report.resumedFrom == 0)
        let container = try GuestStateContainer.open(at: fixture.destination)
        try container.unlock(with: UnlockCredentials(vault: fixture.receiverVault))
        #expect(container.generation == vector.receiverCommit.generation)
        for entry in try #require(Self.containerManifest()["entries"] as? [[String: Any]]) {
            let name = try #require(entry["name"] as? String)
            var content: [UInt8] = []
            if name == "vm.runtime" { try container.readStream(name) { content += $0 } } else { content = try container.read(name) }
            #expect(hexString(try SHA256.hash(content)) == entry["sha256"] as? String, "\(name) at the receiver")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.dir.file("out")) == ["received.state"], "no partial file is left")
        print("transfer vectors: transcript-\(mode).json: the real receiver took the vector's sender and committed generation \(report.generation)")
    }

    @Test(arguments: modes)
    func theRealSenderSendsTheVectorsPayloads(_ mode: String) throws {
        let vector = try Self.load(mode)
        let inputs = try Inputs(vector)
        let fixture = try Fixture(inputs)
        let messages = Mutex<[[UInt8]]>([])
        let (senderEnd, receiverEnd) = MemoryChannel.pair(observeSecond: { bytes in messages.withLock { $0.append(bytes) } })
        let receiverResult = Mutex<Result<[TranscriptRecorder.Frame], any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let destination = fixture.destination, vault = fixture.receiverVault
        let authentication = inputs.receiverAuthentication, handshake = inputs.receiver
        Thread.detachNewThread {
            let result = Result {
                try TranscriptRecorder.receive(over: receiverEnd, into: destination, vault: vault, authentication: authentication, handshake: handshake)
            }
            receiverEnd.close()
            receiverResult.withLock { $0 = result }
            done.signal()
        }
        let sent = Result {
            try ContainerTransfer.send(containerAt: fixture.sourcePath, vault: fixture.sourceVault, over: senderEnd,
                                       authentication: inputs.senderAuthentication)
        }
        senderEnd.close()
        done.wait()
        let report = try sent.get()
        let frames = try receiverResult.withLock { $0! }.get()

        #expect(hexString(messages.withLock { $0[0] }) == vector.messages[1].bytes, "the receiver's hello")
        let expected = vector.messages.filter { $0.kind == "frame" }
        try #require(frames.count == expected.count)
        for (frame, theirs) in zip(frames, expected) {
            #expect(frame.direction.rawValue == theirs.direction && Self.typeName(frame.type) == theirs.type, "frame \(theirs.index)")
            let payload = hexString(frame.type == .final ? Array(frame.payload[0..<40]) : frame.payload)
            let theirPayload = theirs.type == "FINAL" ? String((theirs.payload ?? "").prefix(80)) : theirs.payload
            #expect(payload == theirPayload, "frame \(theirs.index) (\(theirs.type ?? "")): payload from the real sender")
        }
        #expect(report.generation == vector.receiverCommit.generation)
    }

    /// Bytes of the vector sender's stream changed one at a time (xor 1), each run through
    /// the real receiver, in both modes: every one refused, nothing committed. By default
    /// every byte except inside the DATA frame's ciphertext, where the first and last 64
    /// bytes and every 61st are changed (one session costs about a millisecond and a half
    /// of CPU in a debug build, and the DATA ciphertext is 48,834 bytes of the same check);
    /// GUESTVAULT_TRANSFER_SWEEP=all changes every byte.
    @Test func aChangedByteAnywhereInTheSendersStreamIsRefused() throws {
        let everyByte = ProcessInfo.processInfo.environment["GUESTVAULT_TRANSFER_SWEEP"] == "all"
        var tried = 0, accepted = 0, committed = 0
        var refusals: [String: Int] = [:]
        for mode in Self.modes {
            let vector = try Self.load(mode)
            let inputs = try Inputs(vector)
            let fixture = try Fixture(inputs)
            var indexes: [Int] = []
            var start = 0
            for message in vector.messages where message.direction == "sender->receiver" {
                let count = message.bytes.count / 2
                if message.type == "DATA" && !everyByte {
                    indexes += Array(start..<(start + 16 + 64)) + Array(stride(from: start + 16 + 64, to: start + count - 64, by: 61))
                        + Array((start + count - 64)..<(start + count))
                } else {
                    indexes += Array(start..<(start + count))
                }
                start += count
            }
            let out = fixture.dir.file("out")
            for index in indexes {
                let run = Self.runAgainstRealReceiver(inputs, fixture, flip: index, total: start)
                tried += 1
                switch run.received {
                case .success:
                    accepted += 1
                    Issue.record("\(mode): byte \(index) of the sender's stream changed, and the receiver accepted it")
                case .failure(let error as TransferError): refusals[error.code.name, default: 0] += 1
                case .failure(let error): refusals["\(type(of: error))", default: 0] += 1
                }
                if FileSystem.exists(fixture.destination) { committed += 1 }
                for name in try FileManager.default.contentsOfDirectory(atPath: out) { try FileManager.default.removeItem(atPath: "\(out)/\(name)") }
            }
        }
        print("bit flips: transfer transcript: \(tried) tried, \(accepted) accepted")
        print("bit flips: transfer transcript: \(everyByte ? "every byte" : "every byte outside the DATA ciphertext, every 61st inside it") of both vectors' sender streams; refused as \(refusals.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))")
        #expect(accepted == 0)
        #expect(committed == 0, "the receiver committed after a changed byte")
    }
}
