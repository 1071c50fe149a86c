import Dispatch
import Foundation
import GuestVaultCore
import GuestVaultCrypto
import GuestVaultKeys
@testable import GuestVaultState
import GuestVaultSystem
import GuestVaultTransfer
import GuestVaultTransferTesting
import Testing

/// The receiver against a sender it accepts that is hostile (issue 13.1, 13.4, 13.12),
/// and its listener against connections that are not transfers (13.11).
@Suite struct ReceiverHardeningTests {
    /// A receiving host with a VM of its own, and a sender it trusts.
    struct Host {
        let dir = TemporaryDirectory("hardening")
        let vault: KeyVault
        let recipient: X25519.PrivateKey
        let senderVault: KeyVault
        let senderKey: X25519.PrivateKey
        /// The receiving host's own container of `vm`, at generation 3.
        let localPath: String
        let vm = UUID()
        let localID: [UInt8]

        init() throws {
            vault = try KeyVault.createFileVault(at: dir.file("vault"))
            recipient = try vault.recipientKey()
            senderVault = try KeyVault.createFileVault(at: dir.file("sender-vault"))
            senderKey = try senderVault.recipientKey()
            localPath = dir.file("local.state")
            let local = try GuestStateContainer.create(at: localPath, vm: vm, vault: vault)
            try local.write("tpm.permanent", [1, 2, 3])
            try local.commit()
            try local.write("tpm.permanent", [4, 5, 6])
            try local.commit()
            localID = local.containerID
            try FileManager.default.createDirectory(atPath: dir.file("in"), withIntermediateDirectories: false)
        }

        /// The local container still opens in the vault, at generation 3, and its counter
        /// is where its own commits put it.
        func expectLocalContainerIntact(_ context: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) throws {
            let fresh = try KeyVault.open(at: vault.path)
            #expect(try fresh.counters.latest(vm: vm, container: localID) == 3, "\(context): the local counter moved", sourceLocation: sourceLocation)
            let local = try GuestStateContainer.open(at: localPath)
            #expect(throws: Never.self, "\(context): the local container no longer opens", sourceLocation: sourceLocation) {
                try local.unlock(with: UnlockCredentials(vault: fresh))
            }
            #expect(local.generation == 3, sourceLocation: sourceLocation)
        }

        /// Receives `source` into `in/<name>` from the trusted sender.
        func receive(_ source: ScriptedSender.Source, into name: String, policy: ReceivePolicy = ReceivePolicy(),
                     accepting: AcceptedSenders? = nil, steps: [ScriptedSender.Step]? = nil) throws -> (Result<ContainerTransfer.Report, any Error>, ScriptedSender) {
            let sender = try ScriptedSender(.recipient(recipient.publicKey, sender: senderKey))
            let channel = try sender.channel(steps ?? source.steps())
            let result = Result {
                try ContainerTransfer.receive(over: channel, into: dir.file("in/\(name)"), vault: vault,
                                              authentication: .asRecipient(recipient, accepting: accepting ?? .only([senderKey.publicKey])),
                                              policy: policy)
            }
            return (result, sender)
        }

        /// A container the sender forges in its own vault: VM `vm`, container id `id`
        /// (random if nil), one commit at `generation` — a first commit may carry any
        /// generation (docs/FORMAT.md §6), so a sender can make one at 2^64-1.
        func forge(generation: UInt64, id: [UInt8]? = nil, name: String) throws -> ScriptedSender.Source {
            let dek = try SecretBytes(randomCount: 32)
            let slots = try KeyProtectorSet([.wrapForVault(dek, vault: senderVault, vm: vm, epoch: 1)])
            let superblock = Superblock(containerID: try id ?? SecureRandom.bytes(count: 16), vm: vm, created: 0)
            let keys = try EntryKeys(dek: dek, containerID: superblock.containerID)
            let header = try superblock.encoded()
            var bytes = header + [UInt8](repeating: 0, count: Int(ContainerFormat.logStart) - header.count)
            bytes += try CommitRecord(generation: generation, previous: 0, slots: slots, entries: [], keys: keys,
                                      superblockBytes: header).bytes
            bytes += [UInt8](repeating: 0, count: 4096)
            let path = dir.file(name)
            try DurableFile.write(bytes, to: path, .creatingNew)
            return try ScriptedSender.Source(containerAt: path, vault: senderVault)
        }
    }

    static func expectCode(_ result: Result<ContainerTransfer.Report, any Error>, _ code: ErrorCode, _ context: String,
                           sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        do {
            _ = try result.get()
            Issue.record("\(context): the receiver accepted it", sourceLocation: sourceLocation)
        } catch {
            #expect((error as? TransferError)?.code == code, "\(context): \(error)", sourceLocation: sourceLocation)
        }
    }

    // MARK: 13.1 Rollback counters cannot be poisoned through receive

    @Test func aForgedContainerAtTheLastGenerationNeitherTrapsNorTouchesALocalContainer() throws {
        let host = try Host()
        // A new container of the host's VM at 2^64-1: it cannot be given a slot here
        // (that is a commit), so it is refused, without a trap.
        let last = try host.forge(generation: .max, name: "forged-last.state")
        let (refused, _) = try host.receive(last, into: "a.state")
        Self.expectCode(refused, .integrity, "generation 2^64-1")
        #expect(!FileManager.default.fileExists(atPath: host.dir.file("in/a.state")))
        try host.expectLocalContainerIntact("after generation 2^64-1")

        // At 2^64-2 it is a new container of that VM with a counter of its own: it lands,
        // and the host's own container of the VM still opens, its counter unmoved.
        let high = try host.forge(generation: .max - 1, name: "forged-high.state")
        let (landed, _) = try host.receive(high, into: "b.state")
        #expect(try landed.get().generation == .max)
        try host.expectLocalContainerIntact("after a container at 2^64-2")
    }

    @Test(arguments: [UInt64.max, UInt64(Int64.max) + 1])
    func aLengthPastEveryFileOffsetIsRefusedWithoutATrap(_ length: UInt64) throws {
        let host = try Host()
        let source = try host.forge(generation: 2, name: "long.state")
        var manifest = try TransferManifest.parse(source.manifest)
        manifest.length = length
        var steps = source.steps()
        steps[0] = .frame(.manifest, manifest.bytes)
        let (result, _) = try host.receive(source, into: "long.state", policy: ReceivePolicy(maximumBytes: .max), steps: steps)
        Self.expectCode(result, .tooLarge, "a length of \(length)")
    }

    @Test func aContainerTheVaultHasACounterForIsRefused() throws {
        let host = try Host()
        // The host's own container id, far ahead: it would move the local counter.
        let ahead = try host.forge(generation: 1_000_000, id: host.localID, name: "ahead.state")
        let (result, sender) = try host.receive(ahead, into: "c.state")
        Self.expectCode(result, .containerKnown, "the local container's id")
        #expect(sender.replies.last?.type == .error)
        #expect(!FileManager.default.fileExists(atPath: host.dir.file("in/c.state")))
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: host.dir.file("in"))) ?? []).isEmpty)
        try host.expectLocalContainerIntact("after the local container id")
    }

    @Test func aReceiverThatNamesItsVMsRefusesOthersBeforeAnyData() throws {
        let host = try Host()
        let source = try host.forge(generation: 5, name: "other.state")
        let (result, sender) = try host.receive(source, into: "d.state", policy: ReceivePolicy(vms: [UUID()]), accepting: .anyone)
        Self.expectCode(result, .keys, "a VM not in --vm")
        #expect(sender.replies.map(\.type) == [.error], "refused at the manifest, before an ACK")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: host.dir.file("in"))) ?? []).isEmpty)

        let (accepted, _) = try host.receive(source, into: "d.state", policy: ReceivePolicy(vms: [host.vm]), accepting: .anyone)
        #expect(try accepted.get().generation == 6)
    }

    @Test func aRollbackFoundWhileReceivingStaysARollback() throws {
        let host = try Host()
        // A vault of an older build: one counter for the VM, at 10.
        try host.vault.counters.record(vm: host.vm, generation: 10)
        let old = try host.forge(generation: 4, name: "old.state")
        let (result, _) = try host.receive(old, into: "e.state")
        let error = try #require(throws: TransferError.self) { try result.get() }
        #expect(ErrorChain.category(of: error) == .rollback, "\(error)")
        #expect(error.underlying != nil, "the container's error is kept")
    }

    // MARK: 13.4 The partial file never follows what another user placed

    @Test(.enabled(if: OtherUser.isAvailable))
    func thePartialFileNeverFollowsAnotherUsersSymlinkOrUsesTheirFile() throws {
        let host = try Host()
        let source = try host.forge(generation: 2, name: "sent.state")
        let attacker = try OtherUser.directory("gv-transfer-partial")
        defer { try? FileManager.default.removeItem(atPath: attacker) }
        let victim = host.dir.file("victim")
        try DurableFile.write(Array("victim".utf8), to: victim)
        let destination = attacker + "/received.state"
        // The name is computable from the manifest (transfer id 5a…5a here).
        let partial = destination + ".partial-" + String(repeating: "5a", count: 16)

        func receive() throws -> Result<ContainerTransfer.Report, any Error> {
            let sender = try ScriptedSender(.recipient(host.recipient.publicKey, sender: host.senderKey))
            let channel = try sender.channel(source.steps())
            return Result {
                try ContainerTransfer.receive(over: channel, into: destination, vault: host.vault,
                                              authentication: .asRecipient(host.recipient, accepting: .only([host.senderKey.publicKey])))
            }
        }

        try OtherUser.symlink(victim, at: partial)
        Self.expectCode(try receive(), .io, "a symlink at the partial name")
        #expect(try FileSystem.readFile(victim, limit: 100) == Array("victim".utf8), "the receiver wrote through the symlink")
        #expect(!FileManager.default.fileExists(atPath: destination))

        try FileManager.default.removeItem(atPath: partial)
        let made = try OtherUser.run(["sh", "-c", "printf attacker > '\(partial)'"])
        #expect(made.status == 0, "\(made.output)")
        Self.expectCode(try receive(), .io, "another user's file at the partial name")
        #expect(!FileManager.default.fileExists(atPath: destination))

        try FileManager.default.removeItem(atPath: partial)
        try OtherUser.symlink(victim, at: partial + ".ack")
        // Only the .ack is the attacker's now; a new transfer never reads it.
        let report = try receive().get()
        #expect(report.generation == 3)
        let (_, owner) = try FileSystem.permissions(destination)
        #expect(owner == FileSystem.currentUser, "DEST is a file the receiver made")
        #expect(try FileSystem.readFile(victim, limit: 100) == Array("victim".utf8))
    }

    // MARK: 13.12 The peer's words

    @Test func thePeersErrorTextIsQuotedBoundedAndMarked() throws {
        let host = try Host()
        let source = try host.forge(generation: 2, name: "sent.state")
        let nasty = Array("\u{1b}[2J\u{1b}]0;owned\u{07}\nReceived vm1.state: committed generation 9\n".utf8)
            + [UInt8](repeating: 0x41, count: (4 << 20) - 200)   // a 4 MiB line, as large as a frame holds
        let steps: [ScriptedSender.Step] = [.frame(.manifest, source.manifest), .frame(.key, source.key), .frame(.error, nasty)]
        let (result, _) = try host.receive(source, into: "f.state", steps: steps)
        let error = try #require(throws: TransferError.self) { try result.get() }
        let text = error.description
        #expect(error.code == .peer)
        #expect(text.unicodeScalars.allSatisfy { (0x20...0x7e).contains($0.value) }, "control bytes reach the terminal: \(text.prefix(200))")
        #expect(text.utf8.count < 600, "\(text.utf8.count) bytes")
        #expect(text.contains("it says: \"\\x1b[2J"), "\(text.prefix(300))")
        #expect(text.contains("more bytes not shown"))
    }

    @Test func peerTextKeepsPrintableBytesAndEscapesTheRest() {
        #expect(PeerText.quoted(Array("ok: \"x\"\\".utf8)) == #""ok: \"x\"\\""#)
        #expect(PeerText.quoted([0x0a, 0x1b, 0xff]) == #""\x0a\x1b\xff""#)
        #expect(PeerText.quoted([UInt8](repeating: 0x41, count: 200)).hasSuffix("(40 more bytes not shown)"))
    }

    // MARK: 13.9 Timeouts

    @Test(arguments: [1e300, -1, 0, .infinity, .nan, 86_401])
    func anUnusableTimeoutIsAUsageError(_ seconds: Double) {
        let error = #expect(throws: TransferError.self) { try TransferTimeouts(idle: seconds) }
        #expect(error?.category == .usage)
        #expect(throws: TransferError.self) { try TransferTimeouts(idle: 5, handshake: seconds) }
    }

    /// `send` to a listener that is there: the old code connected, then trapped
    /// converting 1e300 seconds for the socket.
    @Test func theCLIRefusesAHugeTimeoutWithOneLine() throws {
        let host = try Host()
        let listener = try StreamSocket.listen(.tcp(host: "127.0.0.1", port: 0))
        let port = try #require(listener.localPort)
        let recipientHex = hexString(host.recipient.publicKey.rawRepresentation)
        for verb in [["send", host.localPath, "--to", "tcp:127.0.0.1:\(port)", "--recipient", recipientHex]] {
            let process = Process()
            process.executableURL = GuestVaultBinary.url
            process.arguments = verb + ["--vault", host.vault.path, "--timeout", "1e300"]
            let errors = Pipe()
            process.standardError = errors
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationReason == .exit && process.terminationStatus != 0 && process.terminationStatus < 128,
                    "\(verb[0]): exit \(process.terminationStatus)")
            #expect(text.split(separator: "\n").count == 1 && text.contains("--timeout"), "\(verb[0]): \(text)")
        }
    }

    // MARK: 13.11 The listener: a handshake deadline, and other connections served

    @Test func stallingAndGarbageConnectionsDoNotUseUpTheReceive() throws {
        let host = try Host()
        let statePath = host.dir.file("to-send.state")
        let container = try GuestStateContainer.create(at: statePath, vm: UUID(), vault: host.senderVault)
        try container.write("tpm.permanent", [UInt8](repeating: 7, count: 5000))
        try container.commit()

        let listener = try StreamSocket.listen(.tcp(host: "127.0.0.1", port: 0))
        let port = try #require(listener.localPort)
        let timeouts = try TransferTimeouts(idle: 30, handshake: 1)
        let destination = host.dir.file("in/listened.state")
        let vault = host.vault, recipient = host.recipient, senderKey = host.senderKey.publicKey
        let outcome = OutcomeBox()
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let result = Result {
                try ReceiveListener.receiveOne(on: listener, timeouts: timeouts) { channel in
                    try ContainerTransfer.receive(over: channel, into: destination, vault: vault,
                                                  authentication: .asRecipient(recipient, accepting: .only([senderKey])))
                }
            }
            outcome.set(result)
            done.signal()
        }

        // A connection that sends one byte at a time, slower than the handshake allows,
        // but faster than the idle timeout: only the deadline ends it.
        let drip = try StreamSocket.connect(.tcp(host: "127.0.0.1", port: port))
        try drip.setTimeout(seconds: 60)
        let dripEnded = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            for byte in Array("GVTX".utf8) + [UInt8](repeating: 0, count: 200) {
                do { try drip.send([byte]) } catch { break }
                usleep(300_000)
                if (try? drip.receiveIfReady(maximum: 4096)) == [] { break }
            }
            dripEnded.signal()
        }
        // A connection that is not a GuestVault sender at all.
        let garbage = try StreamSocket.connect(.tcp(host: "127.0.0.1", port: port))
        try garbage.send(Array("GET / HTTP/1.0\r\n\r\n".utf8) + [UInt8](repeating: 0x20, count: 200))

        // The real sender still gets through.
        let socket = try StreamSocket.connect(.tcp(host: "127.0.0.1", port: port))
        try socket.setTimeout(seconds: 30)
        let report = try ContainerTransfer.send(containerAt: statePath, vault: host.senderVault, over: socket,
                                                authentication: .toRecipient(recipient.publicKey, sender: host.senderKey))
        done.wait()
        let received = try #require(outcome.get()).get()
        #expect(received.generation == report.generation)
        #expect(FileManager.default.fileExists(atPath: destination))
        // The drip connection was closed by the receiver (its deadline), not by us.
        dripEnded.wait()
        #expect(try Self.readsToTheEnd(drip), "the stalling connection is closed")
        try garbage.setTimeout(seconds: 60)
        #expect(try Self.readsToTheEnd(garbage), "the garbage connection is closed")
    }

    /// Reads (the receiver's hello) until the end of the stream; false if the socket's
    /// timeout came first.
    static func readsToTheEnd(_ socket: StreamSocket) throws -> Bool {
        while true {
            do {
                if try socket.receive(maximum: 4096).isEmpty { return true }
            } catch let error as SystemError where error.isTimeout {
                return false
            } catch {
                return true   // reset by the peer: closed too
            }
        }
    }

    @Test func aSecondSenderIsToldTheReceiverIsBusy() throws {
        let host = try Host()
        let statePath = host.dir.file("to-send.state")
        let container = try GuestStateContainer.create(at: statePath, vm: UUID(), vault: host.senderVault)
        try container.write("tpm.permanent", [UInt8](repeating: 9, count: 5000))
        try container.commit()

        let listener = try StreamSocket.listen(.tcp(host: "127.0.0.1", port: 0))
        let port = try #require(listener.localPort)
        let timeouts = try TransferTimeouts(idle: 30, handshake: 20)
        let destination = host.dir.file("in/busy.state")
        let vault = host.vault, recipient = host.recipient, senderKey = host.senderKey
        let outcome = OutcomeBox()
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            outcome.set(Result {
                try ReceiveListener.receiveOne(on: listener, timeouts: timeouts) { channel in
                    try ContainerTransfer.receive(over: channel, into: destination, vault: vault,
                                                  authentication: .asRecipient(recipient, accepting: .only([senderKey.publicKey])))
                }
            })
            done.signal()
        }
        // The first sender stops before its KEY frame: its transfer holds the listener.
        let first = GatedChannel(try StreamSocket.connect(.tcp(host: "127.0.0.1", port: port)), holdAtSend: 3)
        let senderVault = host.senderVault
        let firstOutcome = OutcomeBox()
        let firstDone = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            firstOutcome.set(Result {
                try ContainerTransfer.send(containerAt: statePath, vault: senderVault, over: first,
                                           authentication: .toRecipient(recipient.publicKey, sender: senderKey))
            })
            firstDone.signal()
        }
        first.reachedGate.wait()

        let second = try StreamSocket.connect(.tcp(host: "127.0.0.1", port: port))
        try second.setTimeout(seconds: 30)
        let refused = #expect(throws: TransferError.self) {
            try ContainerTransfer.send(containerAt: statePath, vault: senderVault, over: second,
                                       authentication: .toRecipient(recipient.publicKey, sender: senderKey))
        }
        #expect(refused?.code == .peer && refused?.message.contains("busy") == true, "\(String(describing: refused))")

        first.gate.signal()
        firstDone.wait()
        done.wait()
        let sent = try #require(firstOutcome.get()).get()
        #expect(try #require(outcome.get()).get().generation == sent.generation)
    }

    /// A socket whose `holdAtSend`-th send waits for ``gate``.
    final class GatedChannel: ByteChannel, @unchecked Sendable {
        let socket: StreamSocket
        let holdAtSend: Int
        let gate = DispatchSemaphore(value: 0)
        let reachedGate = DispatchSemaphore(value: 0)
        private var sends = 0

        init(_ socket: StreamSocket, holdAtSend: Int) {
            self.socket = socket
            self.holdAtSend = holdAtSend
        }

        func send(_ bytes: [UInt8]) throws {
            sends += 1
            if sends == holdAtSend {
                reachedGate.signal()
                gate.wait()
            }
            try socket.send(bytes)
        }

        func receive(maximum: Int) throws -> [UInt8] { try socket.receive(maximum: maximum) }
        func receive(into buffer: inout [UInt8], at offset: Int, maximum: Int) throws -> Int {
            try socket.receive(into: &buffer, at: offset, maximum: maximum)
        }
        func receiveIfReady(maximum: Int) throws -> [UInt8]? { try socket.receiveIfReady(maximum: maximum) }
    }

    final class OutcomeBox: @unchecked Sendable {
        private let lock = NSLock()
        private var value: Result<ContainerTransfer.Report, any Error>?
        func set(_ result: Result<ContainerTransfer.Report, any Error>) { lock.withLock { value = result } }
        func get() -> Result<ContainerTransfer.Report, any Error>? { lock.withLock { value } }
    }
}
