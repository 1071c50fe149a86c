import Dispatch
import Foundation
import GuestVaultSystem
@_spi(Benchmarking) import GuestVaultTPM

/// The vTPM part of `guestvault benchmark`: each figure next to its reference, measured
/// in the same run with the same client.
struct TPMBenchmarkRun {
    let json: Bool
    let dir: String

    struct Report: Encodable {
        var getRandomEngineNanoseconds: Double
        var getRandomDirectNanoseconds: Double
        var nvWriteGuestVaultMicroseconds: Double?
        var nvWriteSwtpmMicroseconds: Double?
        var createTPMEKMilliseconds: Double?
        var swtpmSetupMilliseconds: Double?
        var blobMigrationMilliseconds: Double?
        var blobMigrationBytes: [Int]?
    }

    func run() throws {
        let self_ = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let scratch = FileSystem.join(dir, ".guestvault-tpm-benchmark-\(ProcessInfo.processInfo.processIdentifier)")
        try FileSystem.createDirectory(scratch)
        defer { try? FileManager.default.removeItem(atPath: scratch) }

        let random = try TPMBenchmarks.getRandom(rounds: 200)
        var report = Report(getRandomEngineNanoseconds: random.engine, getRandomDirectNanoseconds: random.direct)

        // Manufacture: `guestvault create --tpm --ek` against `swtpm_setup --createek --create-ek-cert`.
        let vault = FileSystem.join(scratch, "vault")
        _ = try Self.run(self_, ["vault", "init", "--vault", vault])
        var create: [Double] = [], setup: [Double] = []
        for i in 0..<7 {
            create.append(try Self.timed(self_, ["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", "--ek", FileSystem.join(scratch, "m\(i).state")]))
            if let swtpmSetup = Self.which("swtpm_setup") {
                let state = FileSystem.join(scratch, "swtpm-\(i)")
                try FileSystem.createDirectory(state)
                setup.append(try Self.timed(swtpmSetup, ["--tpm2", "--tpm-state", state, "--createek", "--create-ek-cert", "--overwrite"]))
            }
        }
        report.createTPMEKMilliseconds = create.sorted()[create.count / 2]
        if !setup.isEmpty { report.swtpmSetupMilliseconds = setup.sorted()[setup.count / 2] }

        // NV_Write through each server with the same client.
        let state = FileSystem.join(scratch, "nv.state")
        _ = try Self.run(self_, ["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", state])
        let port = try Self.freePortPair()
        let serve = try Self.start(self_, ["serve", "--vault", vault, state, "--server", "tcp:127.0.0.1:\(port)", "--ctrl", "tcp:127.0.0.1:\(port + 1)",
                                           "--flags", "not-need-init,startup-clear"], port: port + 1)
        do {
            defer { kill(serve.processIdentifier, SIGTERM); serve.waitUntilExit() }
            report.nvWriteGuestVaultMicroseconds = try TPMBenchmarks.nvWriteRoundTrip(port: port, index: 0x0150_0099, rounds: 500)
        }
        if let swtpm = Self.which("swtpm") {
            let swtpmState = FileSystem.join(scratch, "swtpm-nv")
            try FileSystem.createDirectory(swtpmState)
            let port = try Self.freePortPair()
            let server = try Self.start(swtpm, ["socket", "--tpm2", "--tpmstate", "dir=\(swtpmState)", "--server", "type=tcp,port=\(port),bindaddr=127.0.0.1",
                                                "--ctrl", "type=tcp,port=\(port + 1),bindaddr=127.0.0.1", "--flags", "not-need-init,startup-clear"], port: port + 1)
            defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }
            report.nvWriteSwtpmMicroseconds = try TPMBenchmarks.nvWriteRoundTrip(port: port, index: 0x0150_0099, rounds: 500)
        }

        // Live migration of the blobs between two servers, as QEMU drives it.
        let source = FileSystem.join(scratch, "migrate-source.state"), destination = FileSystem.join(scratch, "migrate-destination.state")
        _ = try Self.run(self_, ["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", "--ek", source])
        _ = try Self.run(self_, ["create", "--vault", vault, "--vm", UUID().uuidString, "--tpm", destination])
        let sourcePort = try Self.freePortPair(), destinationPort = try Self.freePortPair()
        let sourceServer = try Self.start(self_, ["serve", "--vault", vault, source, "--server", "tcp:127.0.0.1:\(sourcePort)",
                                                  "--ctrl", "tcp:127.0.0.1:\(sourcePort + 1)", "--flags", "not-need-init,startup-clear"], port: sourcePort + 1)
        let destinationServer = try Self.start(self_, ["serve", "--vault", vault, destination, "--server", "tcp:127.0.0.1:\(destinationPort)",
                                                       "--ctrl", "tcp:127.0.0.1:\(destinationPort + 1)"], port: destinationPort + 1)
        do {
            defer {
                // Stopped on every path, a failed measurement included.
                for server in [sourceServer, destinationServer] {
                    kill(server.processIdentifier, SIGTERM)
                    server.waitUntilExit()
                }
            }
            let migration = try TPMBenchmarks.blobMigration(sourceControl: sourcePort + 1, destinationControl: destinationPort + 1, rounds: 21)
            report.blobMigrationMilliseconds = migration.milliseconds
            report.blobMigrationBytes = migration.blobBytes
        }

        if json { try printJSON(report); return }
        print("vTPM benchmark")
        print(String(format: "  GetRandom(16) through the engine        %8.2f us  (libtpms directly %.2f us, %+.1f%%)",
                     report.getRandomEngineNanoseconds / 1000, report.getRandomDirectNanoseconds / 1000,
                     (report.getRandomEngineNanoseconds / report.getRandomDirectNanoseconds - 1) * 100))
        if let gv = report.nvWriteGuestVaultMicroseconds {
            print(String(format: "  durable NV_Write(64 B) via serve          %8.1f us  median", gv)
                  + (report.nvWriteSwtpmMicroseconds.map { String(format: "  (swtpm 0.7.1, not durable: %.1f us, ratio %.2f)", $0, gv / $0) } ?? ""))
        }
        if let create = report.createTPMEKMilliseconds {
            print(String(format: "  create --tpm --ek                        %8.1f ms  median", create)
                  + (report.swtpmSetupMilliseconds.map { String(format: "  (swtpm_setup --createek --create-ek-cert: %.1f ms, ratio %.2f)", $0, create / $0) } ?? ""))
        }
        if let migration = report.blobMigrationMilliseconds, let bytes = report.blobMigrationBytes {
            print(String(format: "  live migration of the vTPM's blobs         %8.2f ms  median (GET x3, STOP; SET x%d, INIT; blobs %@ B)",
                         migration, bytes.filter { $0 > 0 }.count, bytes.map(String.init).joined(separator: " + ")))
        }
        print("")
    }

    static func which(_ name: String) -> String? {
        ["/usr/bin", "/usr/sbin", "/bin"].map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func run(_ path: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    static func timed(_ path: String, _ arguments: [String]) throws -> Double {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let status = try run(path, arguments)
        guard status == 0 else { throw BenchmarkFailure(message: "\(path) \(arguments.joined(separator: " ")) exited \(status)") }
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
    }

    static func start(_ path: String, _ arguments: [String], port: UInt16) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<500 {
            if (try? StreamSocket.connect(.tcp(host: "127.0.0.1", port: port))) != nil { return process }
            usleep(10_000)
        }
        throw BenchmarkFailure(message: "\(path) did not start listening on \(port)")
    }

    static func freePortPair() throws -> UInt16 {
        for _ in 0..<50 {
            let candidate = UInt16.random(in: 20000...60000) & ~1
            if let a = try? StreamSocket.listen(.tcp(host: "127.0.0.1", port: candidate)),
               let b = try? StreamSocket.listen(.tcp(host: "127.0.0.1", port: candidate + 1)) {
                a.close(); b.close()
                return candidate
            }
        }
        throw BenchmarkFailure(message: "no free port pair on 127.0.0.1")
    }

    struct BenchmarkFailure: Error, CustomStringConvertible { let message: String; var description: String { message } }
}
