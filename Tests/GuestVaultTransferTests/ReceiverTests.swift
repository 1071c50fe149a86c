import GuestVaultCore
import Dispatch
import Foundation
import GuestVaultCrypto
import GuestVaultKeys
import GuestVaultState
import GuestVaultSystem
import GuestVaultTransfer
import GuestVaultTransferTesting
import Testing

/// The real receiver against an authenticated sender that sends what it is told
/// (GuestVaultTransferTesting.ScriptedSender): contents a tampering network cannot
/// produce, because every frame authenticates.
@Suite struct ReceiverTests {
    struct Fixture {
        let dir = TemporaryDirectory("receiver")
        let sourceVault: KeyVault
        let vault: KeyVault
        let recipient: X25519.PrivateKey
        let senderKey: X25519.PrivateKey
        let source: ScriptedSender.Source
        var destination: String { dir.file("out/received.state") }

        init() throws {
            sourceVault = try KeyVault.createFileVault(at: dir.file("source-vault"))
            vault = try KeyVault.createFileVault(at: dir.file("vault"))
            recipient = try vault.recipientKey()
            senderKey = try sourceVault.recipientKey()
            let path = dir.file("source.state")
            let container = try GuestStateContainer.create(at: path, vm: UUID(), vault: sourceVault)
            try container.write("tpm.permanent", Array(repeating: 0x42, count: 3000))
            try container.commit()
            source = try ScriptedSender.Source(containerAt: path, vault: sourceVault)
            try FileManager.default.createDirectory(atPath: dir.file("out"), withIntermediateDirectories: false)
        }

        /// Runs the real receiver against `steps`; returns its result and the sender
        /// (with the receiver's replies).
        func receive(_ steps: [ScriptedSender.Step], maximumBytes: UInt64 = ContainerTransfer.defaultMaximumBytes)
            throws -> (Result<ContainerTransfer.Report, any Error>, ScriptedSender) {
            let sender = try ScriptedSender(.recipient(recipient.publicKey, sender: senderKey))
            let channel = try sender.channel(steps)
            let result = Result {
                try ContainerTransfer.receive(over: channel, into: destination, vault: vault,
                                              authentication: .asRecipient(recipient, accepting: .only([senderKey.publicKey])),
                                              maximumBytes: maximumBytes)
            }
            return (result, sender)
        }

        var leftovers: [String] { (try? FileManager.default.contentsOfDirectory(atPath: dir.file("out"))) ?? [] }

        func manifest(generation: UInt64? = nil, containerID: [UInt8]? = nil, length: UInt64? = nil) -> [UInt8] {
            var m = source.manifest
            if let generation { m.replaceSubrange(48..<56, with: generation.bigEndianBytes) }
            if let containerID { m.replaceSubrange(32..<48, with: containerID) }
            if let length { m.replaceSubrange(56..<64, with: length.bigEndianBytes) }
            return m
        }
    }

    /// Expects `result` to be a TransferError of `code`, the destination absent, and the
    /// receiver's ERROR reply (if it sent one) free of local paths.
    func expectRefused(_ result: Result<ContainerTransfer.Report, any Error>, _ code: TransferError.Code, _ f: Fixture, _ sender: ScriptedSender,
                       sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        do {
            _ = try result.get()
            Issue.record("the receiver accepted it", sourceLocation: sourceLocation)
        } catch let error as TransferError {
            #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("not a TransferError: \(error)", sourceLocation: sourceLocation)
        }
        #expect(!FileManager.default.fileExists(atPath: f.destination), "nothing may appear at the destination", sourceLocation: sourceLocation)
        for reply in sender.replies where reply.type == .error {
            let text = String(decoding: reply.payload, as: UTF8.self)
            #expect(!text.contains("/") && !text.contains(f.dir.path), "an ERROR frame names a local path: \(text)", sourceLocation: sourceLocation)
        }
    }

    @Test func aWellFormedScriptedTransferCommits() throws {
        let f = try Fixture()
        let (result, sender) = try f.receive(f.source.steps())
        let report = try result.get()
        #expect(report.generation == 3, "generation 2 and the receiving vault's slot")
        #expect(report.sender == hexString(f.senderKey.publicKey.rawRepresentation))
        #expect(sender.replies.map(\.type) == [.ack, .done])
        #expect(f.leftovers == ["received.state"])
    }

    @Test func aManifestThatDoesNotMatchTheContainerIsRefused() throws {
        let changes: [(String, (Fixture) -> [UInt8])] = [
            ("generation", { $0.manifest(generation: 7) }),
            ("container id", { $0.manifest(containerID: Array(repeating: 0xee, count: 16)) }),
        ]
        for (name, change) in changes {
            let f = try Fixture()
            var steps = f.source.steps()
            steps[0] = .frame(.manifest, change(f))
            let (result, sender) = try f.receive(steps)
            expectRefused(result, .integrity, f, sender)
            #expect(sender.replies.last?.type == .error, "\(name): the sender is told")
            #expect(f.leftovers.isEmpty, "\(name): \(f.leftovers)")
            #expect(try f.vault.status().trackedVMs == 0, "\(name): no rollback counter was recorded")
        }
    }

    @Test func aContainerOverTheLimitIsRefusedBeforeAnythingIsWritten() throws {
        let f = try Fixture()
        var steps = f.source.steps()
        steps[0] = .frame(.manifest, f.source.manifest)
        let (result, sender) = try f.receive(steps, maximumBytes: 4096)
        expectRefused(result, .tooLarge, f, sender)
        #expect(f.leftovers.isEmpty)

        // No limit, but more than the disk holds.
        steps[0] = .frame(.manifest, f.manifest(length: 1 << 60))
        let (huge, hugeSender) = try f.receive(steps, maximumBytes: .max)
        expectRefused(huge, .tooLarge, f, hugeSender)
        #expect(f.leftovers.isEmpty, "\(f.leftovers)")
    }

    @Test func framesInTheWrongPlaceAreRefused() throws {
        let f = try Fixture()
        let good = f.source.steps(chunk: 1000)
        let cases: [(String, [ScriptedSender.Step], TransferError.Code)] = [
            ("DATA before KEY", [good[0], good[2]], .unexpectedFrame),
            ("DATA at the wrong offset", [good[0], good[1], good[3]], .unexpectedFrame),
            ("DATA past the end", [good[0], good[1], .frame(.data, Array(repeating: 0, count: 8) + Array(repeating: 1, count: f.source.bytes.count + 1))], .unexpectedFrame),
            ("FINAL before the end", [good[0], good[1], good[2], .final(length: UInt64(f.source.bytes.count))], .integrity),
            ("FINAL with another transcript", Array(good.dropLast()) + [.frame(.final, Array(repeating: 0, count: 72))], .integrity),
            ("a short KEY", [good[0], .frame(.key, [1, 2, 3])], .unexpectedFrame),
            ("a long MANIFEST", [.frame(.manifest, f.source.manifest + [0])], .unexpectedFrame),
            ("a DONE from the sender", [good[0], good[1], .frame(.done, Array(repeating: 0, count: 8))], .unexpectedFrame),
            ("a frame numbered twice", [good[0], .frameNumbered(.key, f.source.key, sequence: 0)], .sequence),
            ("raw bytes after KEY", [good[0], good[1], .raw(Array(repeating: 0xff, count: 40))], .tooLarge),
            ("the stream ends", Array(good.prefix(3)), .truncated),
        ]
        for (name, steps, code) in cases {
            let f = try Fixture()
            let (result, sender) = try f.receive(steps)
            do {
                _ = try result.get()
                Issue.record("\(name): accepted")
            } catch let error as TransferError {
                #expect(error.code == code, "\(name): \(error)")
            }
            expectRefused(result, code, f, sender)
        }
    }

    /// A sender that names a key the receiver accepts, without holding it: the session
    /// keys differ, and its first frame does not authenticate.
    @Test func namingAnAcceptedSenderKeyWithoutHoldingItFails() throws {
        let f = try Fixture()
        let impostor = try X25519.PrivateKey()
        let sender = try ScriptedSender(.recipient(f.recipient.publicKey, sender: impostor))
        var hello = try sender.hello()
        hello.replaceSubrange(104..<136, with: f.senderKey.publicKey.rawRepresentation)
        final class Rewriting: ByteChannel {
            let inner: ByteChannel
            let hello: [UInt8]
            var first = true
            init(_ inner: ByteChannel, hello: [UInt8]) { self.inner = inner; self.hello = hello }
            func send(_ bytes: [UInt8]) throws { try inner.send(bytes) }
            func receive(maximum: Int) throws -> [UInt8] {
                let bytes = try inner.receive(maximum: maximum)
                guard first else { return bytes }
                first = false
                return Array(hello.prefix(bytes.count))
            }
        }
        let channel = Rewriting(try sender.channel(f.source.steps()), hello: hello)
        let result = Result {
            try ContainerTransfer.receive(over: channel, into: f.destination, vault: f.vault,
                                          authentication: .asRecipient(f.recipient, accepting: .only([f.senderKey.publicKey])))
        }
        expectRefused(result, .authenticationFailed, f, sender)
        #expect(try f.vault.status().trackedVMs == 0)
    }

    @Test func aSmallOrderEphemeralKeyIsAKeysError() throws {
        let f = try Fixture()
        let sender = try ScriptedSender(.recipient(f.recipient.publicKey, sender: f.senderKey))
        var hello = try sender.hello()
        hello.replaceSubrange(8..<40, with: [UInt8](repeating: 0, count: 32))
        let socketPair = try Self.connectedPair()
        try socketPair.0.send(hello)
        let result = Result {
            try ContainerTransfer.receive(over: socketPair.1, into: f.destination, vault: f.vault,
                                          authentication: .asRecipient(f.recipient, accepting: .anyone))
        }
        expectRefused(result, .keys, f, sender)
    }

    @Test func aSilentPeerTimesOut() throws {
        let f = try Fixture()
        for sendHello in [false, true] {
            let (peer, mine) = try Self.connectedPair()
            try mine.setTimeout(seconds: 0.3)
            if sendHello {
                // A hello, then a frame header that announces more than ever comes.
                let sender = try ScriptedSender(.recipient(f.recipient.publicKey, sender: f.senderKey))
                try peer.send(try sender.hello() + [0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] + Array(repeating: 0, count: 100))
            }
            let start = DispatchTime.now().uptimeNanoseconds
            let result = Result {
                try ContainerTransfer.receive(over: mine, into: f.destination, vault: f.vault,
                                              authentication: .asRecipient(f.recipient, accepting: .anyone))
            }
            let error = try #require(throws: TransferError.self) { try result.get() }
            #expect(error.code == .timeout, "\(error)")
            #expect(DispatchTime.now().uptimeNanoseconds - start < 30_000_000_000, "the timeout did not end the wait")
            withExtendedLifetime(peer) {}
        }
        #expect(!FileManager.default.fileExists(atPath: f.destination))
    }

    /// A connected pair of Unix stream sockets.
    static func connectedPair() throws -> (StreamSocket, StreamSocket) {
        let dir = TemporaryDirectory("pair")
        let path = dir.file("s")
        let listener = try StreamSocket.listen(.unix(path: path))
        let client = try StreamSocket.connect(.unix(path: path))
        let server = try listener.accept()
        return (client, server)
    }
}
