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

/// A channel that can change what it sends: per frame (each `send` is one frame after
/// the hello), drop, repeat, swap, flip a byte, or stop.
final class Tamper: ByteChannel, @unchecked Sendable {
    enum Action { case pass, drop, replay, swapWithNext, flip(Int), cut }
    let inner: StreamSocket
    var plan: [Int: Action]
    var count = 0
    var held: [UInt8]?

    init(_ inner: StreamSocket, plan: [Int: Action]) {
        self.inner = inner
        self.plan = plan
    }

    func send(_ bytes: [UInt8]) throws {
        defer { count += 1 }
        if let previous = held {
            held = nil
            try inner.send(bytes)
            try inner.send(previous)
            return
        }
        switch plan[count] ?? .pass {
        case .pass: try inner.send(bytes)
        case .drop: break
        case .replay: try inner.send(bytes); try inner.send(bytes)
        case .swapWithNext: held = bytes
        case .flip(let index):
            var changed = bytes
            changed[min(index, changed.count - 1)] ^= 0x01
            try inner.send(changed)
        case .cut:
            inner.close()
            throw TransferError(.io, "cut by the test")
        }
    }

    func receive(maximum: Int) throws -> [UInt8] { try inner.receive(maximum: maximum) }
}

struct TwoVaults {
    let dir = TemporaryDirectory("transfer")
    let source: KeyVault
    let destination: KeyVault
    let vm = UUID()
    var sourceState: String { dir.file("source.state") }
    var destinationState: String { dir.file("received.state") }
    let runtime: [UInt8]

    init(runtimeBytes: Int = 3 << 20) throws {
        source = try KeyVault.createFileVault(at: dir.file("source-vault"))
        destination = try KeyVault.createFileVault(at: dir.file("destination-vault"))
        runtime = (0..<runtimeBytes).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 11) }
        let container = try GuestStateContainer.create(at: sourceState, vm: vm, vault: source)
        try container.write("tpm.permanent", Array(repeating: 0x11, count: 5000))
        try container.write("uefi.nvram", Array(0..<200))
        var offset = 0
        let runtime = self.runtime
        try container.writeStream("vm.runtime") { buffer in
            let n = min(buffer.count, runtime.count - offset)
            buffer.replaceSubrange(0..<n, with: runtime[offset..<(offset + n)])
            offset += n
            return n
        }
        try container.commit()
    }

    /// Connects a sender (on a background thread, through `tamper`) and a receiver
    /// (here). Returns the receiver's result and the sender's.
    func run(plan: [Int: Tamper.Action] = [:], senderAuth: TransferAuthentication? = nil, receiverAuth: TransferAuthentication? = nil)
        throws -> (receiver: Result<ContainerTransfer.Report, any Error>, sender: Result<ContainerTransfer.Report, any Error>) {
        let listener = try StreamSocket.listen(.tcp(host: "127.0.0.1", port: 0))
        let port = listener.localPort!
        let senderResult = Mutex<Result<ContainerTransfer.Report, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let recipient = try destination.recipientKey()
        let sourcePath = sourceState, sourceVault = source
        let auth = try senderAuth ?? .toRecipient(recipient.publicKey, sender: source.recipientKey())
        let accepted = try receiverAuth ?? .asRecipient(recipient, accepting: .only([source.recipientKey().publicKey]))
        Thread.detachNewThread {
            let result = Result<ContainerTransfer.Report, any Error> {
                let socket = try StreamSocket.connect(.tcp(host: "127.0.0.1", port: port))
                defer { socket.close() }
                return try ContainerTransfer.send(containerAt: sourcePath, vault: sourceVault, over: Tamper(socket, plan: plan), authentication: auth)
            }
            senderResult.withLock { $0 = result }
            done.signal()
        }
        let connection = try listener.accept()
        let received = Result<ContainerTransfer.Report, any Error> {
            try ContainerTransfer.receive(over: connection, into: destinationState, vault: destination,
                                          authentication: accepted)
        }
        connection.close()
        done.wait()
        return (received, senderResult.withLock { $0! })
    }

    func receivedContent() throws -> (tpm: [UInt8], runtime: [UInt8]) {
        let container = try GuestStateContainer.open(at: destinationState)
        try container.unlock(with: UnlockCredentials(vault: destination))
        var runtime: [UInt8] = []
        try container.readStream("vm.runtime") { runtime += $0 }
        return (try container.read("tpm.permanent"), runtime)
    }

    var nothingVisible: Bool { !FileManager.default.fileExists(atPath: destinationState) }
}

@Suite struct TransferTests {
    @Test func aContainerMovesToAnotherVaultAndOpensThere() throws {
        let t = try TwoVaults()
        let (received, sent) = try t.run()
        let report = try received.get()
        _ = try sent.get()
        #expect(report.vm == t.vm)
        let content = try t.receivedContent()
        #expect(content.tpm == Array(repeating: 0x11, count: 5000))
        #expect(content.runtime == t.runtime)
        #expect(mode(of: t.destinationState) == 0o600)
    }

    @Test func aPresharedMigrationKeyWorksAndAWrongOneIsRefused() throws {
        let t = try TwoVaults(runtimeBytes: 1000)
        let psk = try SecretBytes(randomCount: 32)
        let (ok, _) = try t.run(senderAuth: .presharedKey(psk), receiverAuth: .presharedKey(psk))
        _ = try ok.get()
        try FileManager.default.removeItem(atPath: t.destinationState)
        let (bad, _) = try t.run(senderAuth: .presharedKey(psk), receiverAuth: .presharedKey(try SecretBytes(randomCount: 32)))
        #expect(throws: TransferError.self) { try bad.get() }
        #expect(t.nothingVisible)
    }

    @Test func aTransferForAnotherVaultIsRefused() throws {
        let t = try TwoVaults(runtimeBytes: 1000)
        let (received, _) = try t.run(senderAuth: .toRecipient(try X25519.PrivateKey().publicKey, sender: t.source.recipientKey()))
        let error = try #require(throws: TransferError.self) { try received.get() }
        #expect(error.code == .keys)
        #expect(t.nothingVisible)
    }

    /// A retry after a lost DONE finds the container committed and succeeds without
    /// sending it again; another container is not put over an existing one.
    @Test func aRetryOfACommittedTransferSucceedsAndAnotherContainerIsRefused() throws {
        let t = try TwoVaults(runtimeBytes: 1000)
        let (first, _) = try t.run()
        let committed = try first.get().generation
        let (again, sentAgain) = try t.run()
        #expect(try again.get().generation == committed && again.get().bytes == 0)
        #expect(try sentAgain.get().generation == committed && sentAgain.get().bytes == 0)

        let other = try TwoVaults(runtimeBytes: 1000)
        try FileManager.default.copyItem(atPath: t.destinationState, toPath: other.destinationState)
        let (refused, sent) = try other.run()
        let error = try #require(throws: TransferError.self) { try refused.get() }
        #expect(error.code == .io, "\(error)")
        let senderError = try #require(throws: TransferError.self) { try sent.get() }
        #expect(senderError.code == .peer && !senderError.reason.contains("/"), "\(senderError)")
    }

    @Test func aSenderTheReceiverDoesNotAcceptIsRefusedAndRecordsNothing() throws {
        let t = try TwoVaults(runtimeBytes: 1000)
        let recipient = try t.destination.recipientKey()
        let (received, sent) = try t.run(receiverAuth: .asRecipient(recipient, accepting: .only([try X25519.PrivateKey().publicKey])))
        let error = try #require(throws: TransferError.self) { try received.get() }
        #expect(error.code == .keys, "\(error)")
        #expect(throws: TransferError.self) { try sent.get() }
        #expect(t.nothingVisible)
        #expect(try t.destination.status().trackedVMs == 0, "no rollback counter may be raised by an unaccepted sender")
    }

    @Test func aReceiverThatAcceptsAnySenderNamesTheSender() throws {
        let t = try TwoVaults(runtimeBytes: 1000)
        let recipient = try t.destination.recipientKey()
        let stranger = try X25519.PrivateKey()
        let (received, _) = try t.run(senderAuth: .toRecipient(recipient.publicKey, sender: stranger),
                                      receiverAuth: .asRecipient(recipient, accepting: .anyone))
        #expect(try received.get().sender == hexString(stranger.publicKey.rawRepresentation))
    }

    @Test(arguments: [
        ("flipped byte in a data frame", [4: Tamper.Action.flip(40)], TransferError.Code.authenticationFailed),
        ("flipped byte in a frame header", [3: .flip(9)], .sequence),
        ("replayed frame", [4: .replay], .sequence),
        ("reordered frames", [4: .swapWithNext], .sequence),
        ("dropped frame", [4: .drop], .sequence),
        ("stream cut short", [5: .cut], .truncated),
        ("flipped byte in the hello's random", [0: .flip(50)], .authenticationFailed),
        ("flipped byte in the hello's key id", [0: .flip(80)], .keys),
    ] as [(String, [Int: Tamper.Action], TransferError.Code)])
    func tamperingIsRefusedAndNothingIsCommitted(_ name: String, _ plan: [Int: Tamper.Action], _ expected: TransferError.Code) throws {
        let t = try TwoVaults()
        let (received, _) = try t.run(plan: plan)
        do {
            _ = try received.get()
            Issue.record("\(name): the receiver accepted it")
        } catch let error as TransferError {
            #expect(error.code == expected, "\(name): \(error)")
        }
        #expect(t.nothingVisible, "\(name): nothing may appear at the destination")
    }

    @Test func aDroppedConnectionResumesFromTheLastAcknowledgedChunk() throws {
        let t = try TwoVaults(runtimeBytes: 150 << 20)
        // Frames: 0 hello, 1 manifest, 2 key, 3... data (1 MiB each). Cut after 100 MiB:
        // the receiver acknowledged 64 MiB durably.
        let (first, _) = try t.run(plan: [103: .cut])
        #expect(throws: TransferError.self) { try first.get() }
        #expect(t.nothingVisible)
        let (second, _) = try t.run()
        let report = try second.get()
        #expect(report.resumedFrom == 64 << 20, "resumed from \(report.resumedFrom)")
        #expect(try t.receivedContent().runtime == t.runtime)
        print("transfer: resumed at \(report.resumedFrom >> 20) MiB after a cut at 100 MiB; the whole container verified")
    }

    /// The bytes kept from an interrupted session are checked against the sender's copy
    /// (the prefix digest in FINAL): a changed byte in them is refused, the partial file
    /// removed, and the next try starts from the beginning.
    @Test func aResumeOverChangedKeptBytesIsRefusedAndStartsOver() throws {
        let t = try TwoVaults(runtimeBytes: 100 << 20)
        let (first, _) = try t.run(plan: [83: .cut])
        #expect(throws: TransferError.self) { try first.get() }
        let partials = try FileManager.default.contentsOfDirectory(atPath: t.dir.path).filter { $0.hasPrefix("received.state.partial-") && !$0.hasSuffix(".ack") && !$0.hasSuffix(".lock") }
        let partial = t.dir.file(try #require(partials.first, "a partial file is kept"))
        let file = try OpenFile(path: partial, mode: .readWrite)
        var byte = try file.read(at: 5 << 20, count: 1)
        byte[0] ^= 0x01
        try file.write(byte, at: 5 << 20)
        try file.sync()

        let (second, _) = try t.run()
        let error = try #require(throws: TransferError.self) { try second.get() }
        #expect(error.code == .integrity, "\(error)")
        #expect(t.nothingVisible)
        #expect(!FileManager.default.fileExists(atPath: partial), "the changed partial file is removed")

        let (third, _) = try t.run()
        let report = try third.get()
        #expect(report.resumedFrom == 0)
        #expect(try t.receivedContent().runtime == t.runtime)
    }
}
