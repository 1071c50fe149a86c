import Foundation
import Glibc
import GuestVaultCore
import GuestVaultSystem
import GuestVaultTPM
import Testing

/// What a client can hold of `guestvault serve`, over real sockets against the real
/// binary (issue 13, items 5, 6 and 10): descriptors, connections, memory, time. In each
/// case the misbehaving client is cut off and the TPM keeps answering.
@Suite struct ServerLimitsTests {
    /// A vault and a container with a TPM in `dir`.
    static func makeTPM(_ dir: TemporaryDirectory, vm: UUID = UUID()) throws -> (vault: String, state: String) {
        let vault = dir.file("vault"), state = dir.file("vm.state")
        #expect(try Run.guestvault(["vault", "init", "--vault", vault]).status == 0)
        let created = try Run.guestvault(["create", "--vault", vault, "--vm", vm.uuidString, "--tpm", state])
        try #require(created.status == 0, "\(created.stderr)")
        return (vault, state)
    }

    static func descriptorCount(_ pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    /// A field of /proc/PID/status in bytes ("VmRSS", "VmHWM").
    static func memory(_ pid: Int32, _ field: String) throws -> Int {
        let text = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix(field + ":") })
        let kilobytes = try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]))
        return kilobytes * 1024
    }

    static func log(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    /// A control request and its reply (one read, as swtpm's clients read).
    static func control(_ request: ControlRequest, on socket: StreamSocket) throws -> [UInt8] {
        try socket.setTimeout(seconds: 30)
        try socket.send(request.encoded())
        return try socket.receive()
    }

    /// TPM2_GetRandom(8) on a data channel: a success response.
    static func expectRandom(on socket: StreamSocket, sourceLocation: Testing.SourceLocation = #_sourceLocation) throws {
        try socket.setTimeout(seconds: 30)
        try socket.send(TPMCommand.getRandom(8).bytes)
        let response = try TPMResponse(try socket.receive())
        #expect(response.code == 0, "GetRandom answered 0x\(String(response.code, radix: 16))", sourceLocation: sourceLocation)
    }

    /// Whether the peer has closed `socket` (end of stream or reset), as opposed to a
    /// read that timed out while it stays open.
    static func closedByPeer(_ socket: StreamSocket) throws -> Bool {
        try socket.setTimeout(seconds: 10)
        do {
            while true {
                if try socket.receive().isEmpty { return true }
            }
        } catch let error as SystemError {
            return error.errno != EAGAIN && error.errno != EWOULDBLOCK
        }
    }

    // MARK: 13.5: descriptors and connections

    @Test func acceptFailuresAreSurvivedAndTheDataChannelKeepsWorking() throws {
        let dir = TemporaryDirectory("serve-emfile")
        let (vault, state) = try Self.makeTPM(dir)
        let probe = try ServedTPM(vault: vault, state: state, logFile: dir.file("probe.log"))
        let atRest = Self.descriptorCount(probe.pid)
        #expect(probe.terminate() == 0)

        // Room for the data connection and about two control connections, no more.
        let limit = atRest + 3
        let log = dir.file("serve.log")
        let server = try ServedTPM(vault: vault, state: state, launcher: ["/usr/bin/prlimit", "--nofile=\(limit):\(limit)", "--"],
                                   logFile: log)
        let data = try StreamSocket.connect(server.dataAddress)
        try Self.expectRandom(on: data)
        var clients: [StreamSocket] = []
        for _ in 0..<10 { clients.append(try StreamSocket.connect(server.controlAddress)) }
        #expect(waitUntil { Self.log(log).contains("accept failed") }, "the server logged the failed accept: \(Self.log(log))")
        #expect(server.process.isRunning, "serve is still running after accept() failed")
        try Self.expectRandom(on: data)

        // Once descriptors are free again, control clients are served.
        clients.removeAll()
        let later = try StreamSocket.connect(server.controlAddress)
        #expect(try Self.control(.getCapability, on: later) == ControlResponse.capabilities(.guestvaultServe).encoded())
        try Self.expectRandom(on: data)
        #expect(server.terminate() == 0)
    }

    @Test func controlConnectionsAreBounded() throws {
        let dir = TemporaryDirectory("serve-bound")
        let (vault, state) = try Self.makeTPM(dir)
        let server = try ServedTPM(vault: vault, state: state, logFile: dir.file("serve.log"))
        let atRest = Self.descriptorCount(server.pid)
        let limit = TPMServer.Limits().maximumControlConnections
        var clients: [StreamSocket] = []
        for _ in 0..<(limit + 6) { clients.append(try StreamSocket.connect(server.controlAddress)) }
        for client in clients.prefix(limit) {
            #expect(try Self.control(.getCapability, on: client) == ControlResponse.capabilities(.guestvaultServe).encoded())
        }
        // The others wait in the listen backlog: the server holds no descriptor for them.
        #expect(!waitUntil(attempts: 100) { Self.descriptorCount(server.pid) >= atRest + limit + 2 },
                "serve holds \(Self.descriptorCount(server.pid) - atRest) connections, the bound is \(limit)")
        // When one goes, a waiting one is served.
        clients.removeFirst()
        #expect(try Self.control(.getCapability, on: clients[limit - 1]) == ControlResponse.capabilities(.guestvaultServe).encoded())
        #expect(server.terminate() == 0)
    }

    @Test func descriptorsPassedWithoutSetDataFDAreClosed() throws {
        let dir = TemporaryDirectory("serve-scm")
        let (vault, state) = try Self.makeTPM(dir)
        let socket = dir.file("ctrl.sock")
        let server = try UnixServedTPM(vault: vault, state: state, socket: socket, log: dir.file("serve.log"))
        let atRest = Self.descriptorCount(server.pid)
        for _ in 0..<50 {
            let client = try StreamSocket.connect(.unix(path: socket))
            let (mine, passed) = try DescriptorPassing.socketPair()
            try DescriptorPassing.send(ControlRequest.getCapability.encoded(), descriptor: passed.descriptor, on: client)
            try client.setTimeout(seconds: 30)
            #expect(try client.receive() == ControlResponse.capabilities(.guestvaultServe).encoded())
            _ = mine
        }
        #expect(waitUntil { Self.descriptorCount(server.pid) <= atRest + 1 },
                "serve holds \(Self.descriptorCount(server.pid) - atRest) more descriptors after 50 connections that passed one")
        server.stop()
    }

    // MARK: 13.10: SET_DATAFD twice, a client that does not read

    @Test func setDataFDOnAnAttachedChannelIsRefused() throws {
        let dir = TemporaryDirectory("serve-datafd")
        let (vault, state) = try Self.makeTPM(dir)
        let socket = dir.file("ctrl.sock")
        let server = try UnixServedTPM(vault: vault, state: state, socket: socket, log: dir.file("serve.log"))
        let control = try StreamSocket.connect(.unix(path: socket))
        try control.setTimeout(seconds: 30)
        let (first, firstPeer) = try DescriptorPassing.socketPair()
        try DescriptorPassing.send(ControlRequest.setDataFD.encoded(), descriptor: firstPeer.descriptor, on: control)
        #expect(try control.receive() == ControlResponse.result(.success).encoded())
        let (second, secondPeer) = try DescriptorPassing.socketPair()
        try DescriptorPassing.send(ControlRequest.setDataFD.encoded(), descriptor: secondPeer.descriptor, on: control)
        #expect(try control.receive() == ControlResponse.result(.ioError).encoded())
        firstPeer.close()
        secondPeer.close()
        // QEMU's channel stays the data channel; the second descriptor was closed.
        try Self.expectRandom(on: first)
        #expect(try Self.closedByPeer(second))
        server.stop()
    }

    @Test func aControlClientThatDoesNotReadIsCutOff() throws {
        let dir = TemporaryDirectory("serve-slow-reader")
        let (vault, state) = try Self.makeTPM(dir)
        let log = dir.file("serve.log")
        let server = try ServedTPM(vault: vault, state: state, logFile: log, extraArguments: ["--write-timeout", "300"])
        let flood = try StreamSocket.connect(server.controlAddress)
        DescriptorPassing.shrinkReceiveBuffer(flood, to: 4096)
        // Each request gets a ~1.4 KB reply that is never read. One request per send
        // (requests that arrive together are one request, as in swtpm).
        let request = ControlRequest.getStateBlob(type: .permanent, flags: .decrypted, offset: 0).encoded()
        for _ in 0..<8000 {
            do { try flood.send(request, timeout: 2000) } catch { break }
            usleep(300)
        }
        // The TPM still answers.
        let data = try StreamSocket.connect(server.dataAddress)
        try Self.expectRandom(on: data)
        #expect(Self.log(log).contains("could not send a reply"), "\(Self.log(log).suffix(600))")
        #expect(server.terminate() == 0)
    }

    // MARK: 13.6: half-sent requests

    @Test func halfSentRequestsAreTimedOutAndTheirMemoryIsCapped() throws {
        let dir = TemporaryDirectory("serve-half-sent")
        let (vault, state) = try Self.makeTPM(dir)
        let log = dir.file("serve.log")
        let server = try ServedTPM(vault: vault, state: state, logFile: log, extraArguments: ["--request-timeout", "300"])
        let before = try Self.memory(server.pid, "VmRSS")
        var header = ByteWriter()
        header.u32(ControlCommand.setStateBlob.rawValue)
        header.u32(0)
        header.u32(PTMBlobType.permanent.rawValue)
        header.u32(4 << 20)
        let halfSent = header.bytes + [UInt8](repeating: 0x5a, count: 3_500_000)
        var clients: [StreamSocket] = []
        for _ in 0..<30 {
            let client = try StreamSocket.connect(server.controlAddress)
            try? client.send(halfSent, timeout: 20_000)
            clients.append(client)
        }
        for (index, client) in clients.enumerated() {
            let closed = try Self.closedByPeer(client)
            #expect(closed, "half-sent request \(index) still holds its connection")
            if !closed { break }
        }
        // By now the server has read (or refused) every byte sent.
        let peak = try Self.memory(server.pid, "VmHWM")
        #expect(peak - before < 64 << 20, "serve's peak RSS grew by \((peak - before) >> 20) MiB for 30 half-sent 3.5 MB requests")
        print("serve limits: 30 half-sent 3.5 MB SET_STATEBLOB requests: RSS \(before >> 20) MiB at rest, peak \(peak >> 20) MiB")
        #expect(Self.log(log).contains("did not arrive whole"), "\(Self.log(log).suffix(600))")
        let fresh = try StreamSocket.connect(server.controlAddress)
        #expect(try Self.control(.getCapability, on: fresh) == ControlResponse.capabilities(.guestvaultServe).encoded())
        #expect(server.terminate() == 0)
    }
}

/// `guestvault serve` on a Unix control socket, as QEMU uses it (TPM started at once).
final class UnixServedTPM {
    let process = Process()
    var pid: Int32 { process.processIdentifier }

    init(vault: String, state: String, socket: String, log: String) throws {
        process.executableURL = URL(fileURLWithPath: GuestVaultBinary.path)
        process.arguments = ["serve", "--vault", vault, state, "--ctrl", "unix:\(socket)", "--flags", "not-need-init,startup-clear",
                             "--log-level", "debug", "--log-file", log]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        try #require(waitUntil { (try? StreamSocket.connect(.unix(path: socket))) != nil }, "serve did not come up")
    }

    func stop() {
        kill(pid, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }

    deinit { if process.isRunning { kill(pid, SIGKILL); process.waitUntilExit() } }
}
