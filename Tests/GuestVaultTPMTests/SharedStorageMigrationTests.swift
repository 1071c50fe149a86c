import Foundation
import Glibc
import GuestVaultCore
import GuestVaultState
import GuestVaultSystem
import GuestVaultTPM
import Testing

/// Issue 14, shared storage: two `guestvault serve` processes on ONE container file,
/// the migration source with `--migration release-lock-outgoing` and the destination
/// with `--migration incoming`, through a real QEMU migration (q35, SeaBIOS, TCG, to a
/// file and from it). A third writer (`guestvault put`, an ordinary `serve`) is refused
/// as locked (exit code 6) at every stage: while the source holds the writer lock, in
/// the window after the source handed it over and before the destination took it, and
/// once the destination holds it. And LOCK_STORAGE over the control channel.
@Suite struct SharedStorageMigrationTests {
    /// A `guestvault serve` on a Unix control socket for QEMU, optionally with a TCP data
    /// listener (to read PCRs while QEMU is stopped), logging to a file.
    final class Server {
        let process = Process()
        let socket: String
        let log: String
        let dataPort: UInt16?

        init(vault: String, state: String, socket: String, log: String, migration: String?, dataPort: UInt16? = nil) throws {
            self.socket = socket
            self.log = log
            self.dataPort = dataPort
            process.executableURL = URL(fileURLWithPath: GuestVaultBinary.path)
            process.arguments = ["serve", "--vault", vault, state, "--ctrl", "unix:\(socket)", "--log-level", "debug", "--log-file", log]
                + (migration.map { ["--migration", $0] } ?? [])
                + (dataPort.map { ["--server", "tcp:127.0.0.1:\($0)"] } ?? [])
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            try #require(waitUntil { (try? StreamSocket.connect(.unix(path: socket))) != nil }, "serve did not come up: \(ServerLimitsTests.log(log))")
        }

        /// SIGTERM and the exit status.
        func stop() -> Int32 {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(30)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            return process.terminationStatus
        }

        func waitForLog(_ text: String) -> Bool {
            waitUntil(attempts: 3000) { ServerLimitsTests.log(self.log).contains(text) }
        }

        deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
    }

    /// A free loopback TCP port (below the ephemeral range, see freeLoopbackPortPair).
    static func freePort() -> UInt16 {
        freeLoopbackPortPair()
    }

    /// TPM2_PCR_Read of sha256 PCRs 0-7 sent raw on a data channel: the eight digests.
    static func readPCRs(at address: StreamSocket.Address) throws -> [[UInt8]] {
        let socket = try StreamSocket.connect(address)
        defer { socket.close() }
        try socket.setTimeout(seconds: 30)
        // TPM_ST_NO_SESSIONS, size 20, TPM_CC_PCR_Read; TPML_PCR_SELECTION {1, sha256, 3, ff 00 00}.
        let command: [UInt8] = [0x80, 0x01, 0, 0, 0, 20, 0, 0, 0x01, 0x7e, 0, 0, 0, 1, 0, 0x0b, 3, 0xff, 0, 0]
        try socket.send(command)
        var response: [UInt8] = []
        while response.count < 10 || response.count < Int(UInt32(bigEndianBytes: response[2..<6])!) {
            let piece = try socket.receive()
            if piece.isEmpty { break }
            response += piece
        }
        var reader = ByteReader(response, subject: "TPM2_PCR_Read response")
        _ = try reader.u16("tag")
        _ = try reader.u32("size")
        let code = try reader.u32("response code")
        try #require(code == 0, "TPM2_PCR_Read answered \(String(code, radix: 16))")
        _ = try reader.u32("update counter")
        let selections = try reader.u32("selection count")
        for _ in 0..<selections {
            _ = try reader.u16("hash")
            let size = try reader.u8("select size")
            _ = try reader.take(count: size, "pcrSelect")
        }
        let count = try reader.u32("digest count")
        var digests: [[UInt8]] = []
        for _ in 0..<count {
            let size = try reader.u16("digest size")
            digests.append(Array(try reader.take(count: size, "digest")))
        }
        return digests
    }

    /// What a third writer gets: `guestvault put` and an ordinary `guestvault serve` on
    /// the container, both refused as locked (exit code 6) when `refused`.
    static func expectThirdWriter(refused: Bool, vault: String, state: String, dir: TemporaryDirectory, stage: String,
                                  sourceLocation: Testing.SourceLocation = #_sourceLocation) throws {
        let value = dir.file("value")
        try Data("third writer".utf8).write(to: URL(fileURLWithPath: value))
        let put = try Run.guestvault(["put", "--vault", vault, state, "test.third", value])
        if refused {
            let socket = dir.file("third.ctrl")
            try? FileManager.default.removeItem(atPath: socket)
            // Refused, it exits at once; were it not, it would serve until the timeout.
            let serve = try Run.program(GuestVaultBinary.path, ["serve", "--vault", vault, state, "--ctrl", "unix:\(socket)", "--flags", "not-need-init"],
                                        timeout: 30)
            #expect(put.status == 6, "\(stage): put was not refused as locked: \(put.status) \(put.stderr)", sourceLocation: sourceLocation)
            #expect(put.stderr.contains("in use by another writer"), "\(stage): \(put.stderr)", sourceLocation: sourceLocation)
            #expect(serve.status == 6, "\(stage): serve was not refused as locked: \(serve.status) \(serve.stderr)", sourceLocation: sourceLocation)
        } else {
            #expect(put.status == 0, "\(stage): put: \(put.stderr)", sourceLocation: sourceLocation)
        }
    }

    /// The container file as bytes, and its lock file's text.
    static func bytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

    @Test(.enabled(if: Peers.qemu && Peers.tpm2Tools, "needs qemu-system-x86, seabios and tpm2-tools"))
    func twoServersOnOneContainerHandTheLockOverAndAThirdWriterIsRefusedThroughout() throws {
        let dir = TemporaryDirectory("shared-storage")
        let (vault, state) = try ServerLimitsTests.makeTPM(dir)
        let nvData = Array("on shared storage".utf8)
        let tpm = try ServedTPM(vault: vault, state: state)
        let define = try Run.program(Run.which("tpm2_nvdefine")!, ["0x1500021", "-C", "o", "-s", "\(nvData.count)", "-a", "ownerread|ownerwrite"], environment: tpm.tcti)
        #expect(define.status == 0, "\(define.stderr)")
        let write = try Run.program(Run.which("tpm2_nvwrite")!, ["0x1500021", "-C", "o", "-i", "-"], environment: tpm.tcti, input: Data(nvData))
        #expect(write.status == 0, "\(write.stderr)")
        #expect(tpm.terminate() == 0)

        // The source (holds the lock from its start) and the destination (holds nothing
        // until the state arrives) on the same file.
        let dataPort = Self.freePort()
        let source = try Server(vault: vault, state: state, socket: dir.file("source.ctrl"), log: dir.file("source.log"),
                                migration: "release-lock-outgoing", dataPort: dataPort)
        let destination = try Server(vault: vault, state: state, socket: dir.file("destination.ctrl"), log: dir.file("destination.log"),
                                     migration: "incoming")
        try Self.expectThirdWriter(refused: true, vault: vault, state: state, dir: dir, stage: "before the migration")

        let sourceQEMU = try LiveMigrationTests.QEMU(tpmSocket: source.socket, monitor: dir.file("source.monitor"), log: dir.file("source.seabios"))
        #expect(LiveMigrationTests.waitFor("No bootable device", inFile: dir.file("source.seabios"), seconds: 120))
        _ = try sourceQEMU.hmp("stop")
        // The source TPM's PCRs as SeaBIOS left them (QEMU is stopped; a TCP data
        // connection takes the data channel over for one read).
        let sourcePCRs = try Self.readPCRs(at: .tcp(host: "127.0.0.1", port: dataPort))
        let stream = dir.file("migration.bin")
        _ = try sourceQEMU.hmp("migrate \"exec:cat > \(stream)\"")
        var completed = false
        for _ in 0..<300 {
            if try sourceQEMU.hmp("info migrate").contains("Migration status: completed") { completed = true; break }
            usleep(100_000)
        }
        #expect(completed, "the source migration completed")
        sourceQEMU.kill()
        #expect(source.waitForLog("handed the container's writer lock over"), "\(ServerLimitsTests.log(source.log).suffix(1500))")
        #expect(!ServerLimitsTests.log(destination.log).contains("took the container's writer lock"))

        // The window: the source gave the writer lock up, the destination has not taken it.
        try Self.expectThirdWriter(refused: true, vault: vault, state: state, dir: dir, stage: "after the source handed the lock over")
        #expect(try String(contentsOfFile: state + ".lock", encoding: .utf8).contains("handing over to a migration destination"))

        // The destination QEMU loads the stream: LOCK_STORAGE (QEMU 7.2 sends it), SET_STATEBLOB x3, INIT.
        let destinationQEMU = try LiveMigrationTests.QEMU(tpmSocket: destination.socket, monitor: dir.file("destination.monitor"),
                                                          log: dir.file("destination.seabios"), incoming: "exec:cat \(stream)")
        var loaded = false
        for _ in 0..<300 {
            let status = try destinationQEMU.hmp("info status")
            if status.contains("VM status") && !status.contains("inmigrate") { loaded = true; break }
            usleep(100_000)
        }
        #expect(loaded, "the destination loaded the migration stream")
        #expect(destination.waitForLog("committed the migrated TPM state"), "\(ServerLimitsTests.log(destination.log).suffix(1500))")
        #expect(ServerLimitsTests.log(destination.log).contains("took the container's writer lock"))
        try Self.expectThirdWriter(refused: true, vault: vault, state: state, dir: dir, stage: "after the destination took the lock")

        // The source ends (its hand-off lock goes with it) without storing anything: the
        // destination still holds the writer lock.
        let before = try Self.bytes(state)
        #expect(source.stop() == 0)
        #expect(try Self.bytes(state) == before, "the source wrote to the container after the hand-off")
        try Self.expectThirdWriter(refused: true, vault: vault, state: state, dir: dir, stage: "after the source ended")

        destinationQEMU.kill()
        #expect(destination.stop() == 0)
        // Nobody holds the container now: a writer gets it.
        try Self.expectThirdWriter(refused: false, vault: vault, state: state, dir: dir, stage: "after both ended")

        // The destination's TPM is the source's: the same PCRs and NV.
        let after = try ServedTPM(vault: vault, state: state)
        let destinationPCRs = try Self.readPCRs(at: after.dataAddress)
        let read = try Run.program(Run.which("tpm2_nvread")!, ["0x1500021", "-C", "o", "-s", "\(nvData.count)"], environment: after.tcti)
        #expect(after.terminate() == 0)
        #expect(sourcePCRs.count == 8 && sourcePCRs == destinationPCRs, "PCRs: \(sourcePCRs) vs \(destinationPCRs)")
        #expect(sourcePCRs.first != [UInt8](repeating: 0, count: 32), "SeaBIOS measured into PCR 0")
        #expect(read.stdout == Data(nvData), "NV: \(read.status) \(read.stderr)")
    }

    /// The lock in its two parts, without QEMU: after a hand-off an ordinary writer
    /// (in this process or `guestvault put`) is refused, a migration writer is not; a
    /// second migration writer is; the destination's byte keeps ordinary writers out
    /// after the source has gone; the container is free once both have.
    @Test func theHandOffKeepsOrdinaryWritersOutButLetsTheDestinationIn() throws {
        let dir = TemporaryDirectory("hand-off")
        let (vault, state) = try ServerLimitsTests.makeTPM(dir)
        func ordinaryOpenIsLocked() -> Bool {
            do {
                _ = try GuestStateContainer.open(at: state, access: .readWrite)
                return false
            } catch {
                return ErrorChain.contains(.locked, in: error)
            }
        }
        var source: GuestStateContainer? = try GuestStateContainer.open(at: state, access: .readWrite)
        #expect(ordinaryOpenIsLocked())
        var handOff: ContainerHandOff? = try source!.handOffWriterLock()
        source = nil
        #expect(ordinaryOpenIsLocked(), "an ordinary writer got the container after the hand-off")
        try Self.expectThirdWriter(refused: true, vault: vault, state: state, dir: dir, stage: "after the hand-off")
        var destination: GuestStateContainer? = try GuestStateContainer.openForMigration(at: state)
        #expect(destination?.access == .readWrite)
        #expect(throws: (any Error).self, "a second migration writer") { _ = try GuestStateContainer.openForMigration(at: state) }
        handOff = nil
        #expect(ordinaryOpenIsLocked(), "an ordinary writer got the container from under the destination")
        destination = nil
        #expect(!ordinaryOpenIsLocked())
        _ = handOff
        _ = destination
    }

    /// LOCK_STORAGE over the control channel of an incoming server: refused (0x09) while
    /// an ordinary writer holds the container, waits with its retries until the holder
    /// has gone, and then holds the lock against a third writer.
    @Test func lockStorageTakesTheWriterLockWithRetries() throws {
        let dir = TemporaryDirectory("lock-storage")
        let (vault, state) = try ServerLimitsTests.makeTPM(dir)
        let holder = try ServedTPM(vault: vault, state: state)
        let log = dir.file("incoming.log")
        let incoming = try ServedTPM(vault: vault, state: state, flags: "", logFile: log, extraArguments: ["--migration", "incoming"])
        let address = incoming.controlAddress
        #expect(try MigrationBlobTests.result(.lockStorage(retries: 0), at: address) == PTMResult.fail.rawValue)
        #expect(try MigrationBlobTests.result(.lockStorage(retries: 3), at: address) == PTMResult.fail.rawValue)
        #expect(ServerLimitsTests.log(log).contains("LOCK_STORAGE: could not take the container's writer lock"))

        // Retries up to 25 s: the holder ends meanwhile, and the lock is taken.
        let requested = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: UInt32 = 0xffff_ffff
        let thread = Thread {
            result = (try? MigrationBlobTests.result(.lockStorage(retries: 2500), at: address)) ?? 0xffff_fffe
            requested.signal()
        }
        thread.start()
        #expect(holder.terminate() == 0)
        requested.wait()
        #expect(result == 0, "LOCK_STORAGE after the holder ended: \(String(result, radix: 16))")
        try Self.expectThirdWriter(refused: true, vault: vault, state: state, dir: dir, stage: "after LOCK_STORAGE")
        // Asked again while held: success at once.
        #expect(try MigrationBlobTests.result(.lockStorage(retries: 0), at: address) == 0)
        #expect(incoming.terminate() == 0)
        try Self.expectThirdWriter(refused: false, vault: vault, state: state, dir: dir, stage: "after the incoming server ended")
    }
}
