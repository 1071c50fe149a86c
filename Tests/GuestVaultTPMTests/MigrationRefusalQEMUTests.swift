import Foundation
import Glibc
import GuestVaultCore
import GuestVaultSystem
import GuestVaultTPM
import Testing

/// Issue 14 through QEMU: a migration stream whose TPM blob has a flipped byte, and a
/// stream taken before the container moved on (an older blob set), are refused at
/// SET_STATEBLOB; the destination QEMU fails to load, its TPM stays stopped and the
/// container is not changed.
@Suite(.enabled(if: Peers.qemu && Peers.tpm2Tools, "needs qemu-system-x86, seabios and tpm2-tools"))
struct MigrationRefusalQEMUTests {
    typealias Server = SharedStorageMigrationTests.Server

    /// Starts a destination QEMU loading `stream` and returns once it has exited (a
    /// refused load ends QEMU) or `false` if it loaded the stream.
    static func loadFails(stream: String, server: Server, dir: TemporaryDirectory, name: String) throws -> Bool {
        let qemu = try LiveMigrationTests.QEMU(tpmSocket: server.socket, monitor: dir.file("\(name).monitor"),
                                               log: dir.file("\(name).seabios"), incoming: "exec:cat \(stream)")
        var loaded = false
        let deadline = Date().addingTimeInterval(60)
        while qemu.process.isRunning && Date() < deadline {
            if let status = try? qemu.hmp("info status"), status.contains("VM status"), !status.contains("inmigrate") {
                loaded = true
                break
            }
            usleep(100_000)
        }
        if qemu.process.isRunning { qemu.kill() }
        return !loaded && qemu.process.terminationStatus != 0
    }

    /// The TPM behind the control socket is stopped (GET_TPMESTABLISHED needs a running TPM).
    static func expectStopped(_ server: Server, sourceLocation: Testing.SourceLocation = #_sourceLocation) throws {
        let result = try MigrationBlobTests.result(.getTPMEstablished, at: .unix(path: server.socket))
        #expect(result == PTMResult.badOrdinal.rawValue, "the TPM runs: \(String(result, radix: 16))", sourceLocation: sourceLocation)
    }

    static func firstIndex(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        return (0...(haystack.count - needle.count)).first { haystack[$0..<($0 + needle.count)].elementsEqual(needle) }
    }

    @Test func aFlippedByteAndAnOlderBlobSetAreRefusedByTheDestinationQEMU() throws {
        let dir = TemporaryDirectory("migration-refused")
        let (vault, state) = try ServerLimitsTests.makeTPM(dir)

        // The source VM boots and migrates to a file; its server stores and ends.
        let source = try Server(vault: vault, state: state, socket: dir.file("source.ctrl"), log: dir.file("source.log"), migration: nil)
        let sourceQEMU = try LiveMigrationTests.QEMU(tpmSocket: source.socket, monitor: dir.file("source.monitor"), log: dir.file("source.seabios"))
        #expect(LiveMigrationTests.waitFor("No bootable device", inFile: dir.file("source.seabios"), seconds: 120))
        _ = try sourceQEMU.hmp("stop")
        let stream = dir.file("migration.bin")
        _ = try sourceQEMU.hmp("migrate \"exec:cat > \(stream)\"")
        var completed = false
        for _ in 0..<300 {
            if try sourceQEMU.hmp("info migrate").contains("Migration status: completed") { completed = true; break }
            usleep(100_000)
        }
        #expect(completed, "the source migration completed")
        sourceQEMU.kill()
        #expect(source.stop() == 0)

        // A flipped byte inside the sealed permanent blob (the first "GVMB" in the stream).
        let original = try SharedStorageMigrationTests.bytes(stream)
        let magic = try #require(Self.firstIndex(of: Array("GVMB".utf8), in: original), "no sealed blob in the migration stream")
        var flipped = original
        flipped[magic + 200] ^= 0x01
        let flippedStream = dir.file("flipped.bin")
        try Data(flipped).write(to: URL(fileURLWithPath: flippedStream))

        let before = try SharedStorageMigrationTests.bytes(state)
        let destination = try Server(vault: vault, state: state, socket: dir.file("destination.ctrl"), log: dir.file("destination.log"), migration: nil)
        #expect(try Self.loadFails(stream: flippedStream, server: destination, dir: dir, name: "flipped"), "QEMU loaded a flipped blob")
        #expect(ServerLimitsTests.log(destination.log).contains("SET_STATEBLOB refused the permanent blob"), "\(ServerLimitsTests.log(destination.log).suffix(1500))")
        #expect(ServerLimitsTests.log(destination.log).contains("does not authenticate"))
        try Self.expectStopped(destination)
        #expect(destination.stop() == 0)
        #expect(try SharedStorageMigrationTests.bytes(state) == before, "the container changed")

        // The container moves on (an NV index defined after the stream was taken); the
        // stream's blob set is now older than the container and is refused.
        let tpm = try ServedTPM(vault: vault, state: state)
        let define = try Run.program(Run.which("tpm2_nvdefine")!, ["0x1500022", "-C", "o", "-s", "8", "-a", "ownerread|ownerwrite"], environment: tpm.tcti)
        #expect(define.status == 0, "\(define.stderr)")
        #expect(tpm.terminate() == 0)
        let moved = try SharedStorageMigrationTests.bytes(state)
        let again = try Server(vault: vault, state: state, socket: dir.file("again.ctrl"), log: dir.file("again.log"), migration: nil)
        #expect(try Self.loadFails(stream: stream, server: again, dir: dir, name: "older"), "QEMU loaded an older blob set")
        #expect(ServerLimitsTests.log(again.log).contains("older blob set replayed"), "\(ServerLimitsTests.log(again.log).suffix(1500))")
        try Self.expectStopped(again)
        #expect(again.stop() == 0)
        #expect(try SharedStorageMigrationTests.bytes(state) == moved, "the container changed")
    }
}
